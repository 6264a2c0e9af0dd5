@echo off
rem Stop riskwatch's streaming services (Command Prompt). Same options as the PowerShell script:
rem   scripts\stop_streaming_services.bat               task generator, LLM scheduler, aggregator
rem   scripts\stop_streaming_services.bat -All          every service
rem   scripts\stop_streaming_services.bat -Timeout 60   wait up to 60 s before forcing
setlocal
powershell.exe -NoProfile -ExecutionPolicy Bypass -File "%~dp0stop_streaming_services.ps1" %*
exit /b %ERRORLEVEL%

@echo off
rem Start riskwatch's streaming services (Command Prompt). Same options as the PowerShell script:
rem   scripts\start_streaming_services.bat            task generator, LLM scheduler, aggregator
rem   scripts\start_streaming_services.bat -All       also the LLM simulator, the detector and the gateway
rem   scripts\start_streaming_services.bat detector   just the named service(s)
rem Logs: logs\streaming\SERVICE.log; stop with scripts\stop_streaming_services.bat
setlocal
powershell.exe -NoProfile -ExecutionPolicy Bypass -File "%~dp0start_streaming_services.ps1" %*
exit /b %ERRORLEVEL%

<#
.SYNOPSIS
  Stop the services started by start_streaming_services.ps1 (Windows).

.DESCRIPTION
  .\scripts\stop_streaming_services.ps1                task generator, LLM scheduler, aggregator
  .\scripts\stop_streaming_services.ps1 -All           every service
  .\scripts\stop_streaming_services.ps1 -Timeout 60    wait up to 60 s (default 30) before forcing

  Windows has no SIGTERM: each service is first asked to close (taskkill without /F, which reaches
  processes that handle console close events), then its whole process tree is ended with
  taskkill /F /T once the timeout passes. Stopping what is not running is not an error.
  Environment: RW_LOG_DIR.
#>
[CmdletBinding()]
param(
    [switch]$All,
    [int]$Timeout = 30,
    [Parameter(ValueFromRemainingArguments = $true)][string[]]$Services
)
$ErrorActionPreference = 'Stop'

$Root = Split-Path -Parent $PSScriptRoot
Set-Location $Root
$LogDir = if ($env:RW_LOG_DIR) { $env:RW_LOG_DIR } else { Join-Path 'logs' 'streaming' }

# Upstream first: a stage stops receiving new work before its consumers drain.
$Order = @('gateway', 'detector', 'task_generator', 'scheduler', 'aggregator', 'llmsim')
$Default = @('task_generator', 'scheduler', 'aggregator')
if ($All) { $Wanted = $Order }
elseif ($Services) { $Wanted = $Services }
else { $Wanted = $Default }
foreach ($name in $Wanted) {
    if ($Order -notcontains $name) { Write-Error "unknown service: $name (services: $($Order -join ' '))"; exit 2 }
}
$Selected = @($Order | Where-Object { $Wanted -contains $_ })

$stopping = @{}
foreach ($name in $Selected) {
    $pidFile = Join-Path $LogDir "$name.pid"
    if (-not (Test-Path $pidFile)) { Write-Host "- $name not running"; continue }
    $procId = [int](Get-Content $pidFile -Raw).Trim()
    $proc = Get-Process -Id $procId -ErrorAction SilentlyContinue
    if (-not $proc -or $proc.ProcessName -notmatch '^(uv|python)') {
        Write-Host "- $name not running (removed stale pid file)"
        Remove-Item -Force $pidFile
        continue
    }
    # Through cmd: taskkill's complaints on stderr must not become terminating errors under 'Stop'.
    cmd.exe /c "taskkill /PID $procId /T >nul 2>&1"
    $stopping[$name] = $procId
    Write-Host "-> $name stopping (pid $procId)"
}

$deadline = (Get-Date).AddSeconds($Timeout)
while ($stopping.Count -gt 0) {
    foreach ($name in @($stopping.Keys)) {
        if (-not (Get-Process -Id $stopping[$name] -ErrorAction SilentlyContinue)) {
            Remove-Item -Force -ErrorAction SilentlyContinue (Join-Path $LogDir "$name.pid")
            Write-Host "OK $name stopped"
            $stopping.Remove($name)
        }
    }
    if ($stopping.Count -eq 0) { break }
    if ((Get-Date) -gt $deadline) {
        foreach ($name in @($stopping.Keys)) {
            Write-Warning "$name still running after $Timeout s; ending its process tree (pid $($stopping[$name]))"
            cmd.exe /c "taskkill /PID $($stopping[$name]) /T /F >nul 2>&1"
            Remove-Item -Force -ErrorAction SilentlyContinue (Join-Path $LogDir "$name.pid")
        }
        break
    }
    Start-Sleep -Milliseconds 200
}
exit 0

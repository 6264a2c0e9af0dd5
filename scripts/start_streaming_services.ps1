<#
.SYNOPSIS
  Start riskwatch's streaming services in the background (Windows PowerShell 5.1+ or PowerShell 7).

.DESCRIPTION
  .\scripts\start_streaming_services.ps1              task generator, LLM scheduler, aggregator
  .\scripts\start_streaming_services.ps1 -All         also the LLM simulator, the detector and the gateway
  .\scripts\start_streaming_services.ps1 detector     just the named service(s)

  Same behaviour as scripts/start_streaming_services.sh: each service runs as
  `uv run --frozen python -m <module>` from the repository root with ALGO_ENABLE_KAFKA_STREAMING=true
  and ALGO_METRICS_PORT=<port>; output goes to logs\streaming\<service>.log (errors to
  <service>.err.log), the pid to logs\streaming\<service>.pid. Running it again starts only what is
  not running; a port already in use stops that service from being started.
  Environment: RW_LOG_DIR, RW_START_TIMEOUT_S (default 60), UV (default uv).
#>
[CmdletBinding()]
param(
    [switch]$All,
    [Parameter(ValueFromRemainingArguments = $true)][string[]]$Services
)
$ErrorActionPreference = 'Stop'

$Root = Split-Path -Parent $PSScriptRoot
Set-Location $Root
$LogDir = if ($env:RW_LOG_DIR) { $env:RW_LOG_DIR } else { Join-Path 'logs' 'streaming' }
$StartTimeout = if ($env:RW_START_TIMEOUT_S) { [int]$env:RW_START_TIMEOUT_S } else { 60 }
$Uv = if ($env:UV) { $env:UV } else { 'uv' }

# name -> python -m arguments, metrics port (0: none), every port it listens on
$Catalog = [ordered]@{
    llmsim         = @{ Args = @('riskwatch_llmsim', '--port', '8400'); Metrics = 0; Ports = @(8400) }
    aggregator     = @{ Args = @('riskwatch_aggregator'); Metrics = 9105; Ports = @(9105) }
    scheduler      = @{ Args = @('riskwatch_scheduler', 'llm-scheduler'); Metrics = 9104; Ports = @(9104) }
    task_generator = @{ Args = @('riskwatch_scheduler', 'task-generator'); Metrics = 9103; Ports = @(9103) }
    detector       = @{ Args = @('riskwatch_detector'); Metrics = 9102; Ports = @(9102, 50052) }
    gateway        = @{ Args = @('riskwatch_gateway'); Metrics = 9101; Ports = @(9101, 50051, 8000) }
}
$Default = @('task_generator', 'scheduler', 'aggregator')

if ($All) { $Selected = @($Catalog.Keys) }
elseif ($Services) { $Selected = $Services }
else { $Selected = $Default }
foreach ($name in $Selected) {
    if (-not $Catalog.Contains($name)) {
        Write-Error "unknown service: $name (services: $($Catalog.Keys -join ' '))"
        exit 2
    }
}
if (-not (Get-Command $Uv -ErrorAction SilentlyContinue)) {
    Write-Error 'uv not found (install it, or set UV to its path)'
    exit 1
}
New-Item -ItemType Directory -Force -Path $LogDir | Out-Null

function Test-Listening([int]$Port) {
    $client = New-Object System.Net.Sockets.TcpClient
    try {
        $async = $client.BeginConnect('127.0.0.1', $Port, $null, $null)
        return ($async.AsyncWaitHandle.WaitOne(300) -and $client.Connected)
    } catch { return $false } finally { $client.Close() }
}

function Get-RunningProcess([string]$Name) {
    $pidFile = Join-Path $LogDir "$Name.pid"
    if (-not (Test-Path $pidFile)) { return $null }
    $procId = (Get-Content $pidFile -Raw).Trim()
    if (-not $procId) { return $null }
    $proc = Get-Process -Id ([int]$procId) -ErrorAction SilentlyContinue
    # A pid can be reused: only a uv or python process counts.
    if ($proc -and ($proc.ProcessName -match '^(uv|python)')) { return $proc }
    return $null
}

$failed = $false
$started = @()
foreach ($name in $Selected) {
    $svc = $Catalog[$name]
    $running = Get-RunningProcess $name
    if ($running) { Write-Host "OK $name already running (pid $($running.Id))"; continue }
    Remove-Item -Force -ErrorAction SilentlyContinue (Join-Path $LogDir "$name.pid")
    $busy = @($svc.Ports | Where-Object { Test-Listening $_ })
    if ($busy.Count -gt 0) {
        Write-Warning "$name not started: port(s) $($busy -join ' ') already in use by another program"
        $failed = $true
        continue
    }
    $log = Join-Path $LogDir "$name.log"
    $errLog = Join-Path $LogDir "$name.err.log"
    # The child inherits this process's environment; set the service's variables just around the start.
    $env:ALGO_ENABLE_KAFKA_STREAMING = 'true'
    if ($svc.Metrics) { $env:ALGO_METRICS_PORT = "$($svc.Metrics)" } else { Remove-Item Env:ALGO_METRICS_PORT -ErrorAction SilentlyContinue }
    Add-Content -Path $log -Value "===== $(Get-Date -Format 'yyyy-MM-dd HH:mm:ss') starting: python -m $($svc.Args -join ' ')"
    $proc = Start-Process -FilePath $Uv -ArgumentList (@('run', '--frozen', 'python', '-m') + $svc.Args) `
        -WorkingDirectory $Root -RedirectStandardOutput $log -RedirectStandardError $errLog `
        -WindowStyle Hidden -PassThru
    Remove-Item Env:ALGO_METRICS_PORT -ErrorAction SilentlyContinue
    Set-Content -Path (Join-Path $LogDir "$name.pid") -Value $proc.Id
    $started += $name
    Write-Host "-> $name starting (pid $($proc.Id), ports $($svc.Ports -join ' '), log $log)"
}

$deadline = (Get-Date).AddSeconds($StartTimeout)
foreach ($name in $started) {
    $svc = $Catalog[$name]
    while ($true) {
        $proc = Get-RunningProcess $name
        if (-not $proc) {
            Write-Warning "$name exited during start-up; last lines of its logs:"
            Get-Content (Join-Path $LogDir "$name.log"), (Join-Path $LogDir "$name.err.log") -Tail 30 -ErrorAction SilentlyContinue |
                ForEach-Object { Write-Host "    | $_" }
            Remove-Item -Force -ErrorAction SilentlyContinue (Join-Path $LogDir "$name.pid")
            $failed = $true
            break
        }
        $missing = @($svc.Ports | Where-Object { -not (Test-Listening $_) })
        if ($missing.Count -eq 0) { Write-Host "OK $name running (pid $($proc.Id))"; break }
        if ((Get-Date) -gt $deadline) {
            Write-Warning "$name (pid $($proc.Id)) is running but not listening on $($missing -join ' ') after $StartTimeout s"
            $failed = $true
            break
        }
        Start-Sleep -Milliseconds 500
    }
}
if ($failed) {
    Write-Warning 'some services did not start; the others keep running (scripts\stop_streaming_services.ps1 stops them)'
    exit 1
}
if ($started.Count -gt 0) { Write-Host "logs: Get-Content $LogDir\scheduler.log -Tail 50 -Wait" }
exit 0

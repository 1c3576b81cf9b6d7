function hcStartWorker(folder, python)
    % HCSTARTWORKER  Start a persistent Python worker for FOLDER unless one already serves it (internal).
    %   HCSTARTWORKER(FOLDER, PYTHON) runs, in the background,
    %     PYTHON -m bridge.transport.matfile --serve FOLDER --parent-pid PID --idle-timeout 3600
    %   and waits until it is ready (it imports PyTorch once: seconds). The worker ends with this
    %   session (PID), after an hour without requests, or when FOLDER/stop appears, and removes FOLDER. Its
    %   output goes to FOLDER.log, which the error shows when it cannot start; logs of workers whose folder
    %   is gone are removed when the next worker starts.
    if hcWorkerAlive(folder)
        return
    end
    if isempty(python)
        python = hcPythonExecutable();
    end
    removeOldLogs();
    logFile = [folder, '.log'];
    cmd = sprintf('"%s" -m bridge.transport.matfile --serve "%s" --parent-pid %d --idle-timeout 3600', ...
                  python, folder, hcProcessId());
    oldPath = hcSetPythonPath();
    restore = onCleanup(@() setenv('PYTHONPATH', oldPath));
    if ispc()
        status = system(sprintf('start "hessiancore worker" /B cmd /c "%s > "%s" 2>&1"', cmd, logFile));
    else
        status = system(sprintf('%s > "%s" 2>&1 &', cmd, logFile));
    end
    clear('restore');
    if status ~= 0
        error('hessiancore:transport', 'could not start the hessiancore worker (exit %d):\n  %s', status, cmd);
    end
    start = tic();
    while ~hcWorkerAlive(folder)
        if toc(start) > 120 || workerFailed(logFile)
            error('hessiancore:transport', ['the hessiancore worker did not start:\n  %s\n%s\n', ...
                                            'Run hessiancoreSetup to check the Python environment, or use ', ...
                                            '''Transport'', ''subprocess''.'], cmd, readLog(logFile));
        end
        pause(0.02);
    end
end

function removeOldLogs()
    % The log of a worker that ended normally (its folder is gone) is of no more use.
    logs = dir(fullfile(tempdir(), 'hessiancore-*.log'));
    for i = 1:numel(logs)
        file = fullfile(tempdir(), logs(i).name);
        if ~exist(file(1:end - 4), 'dir')
            try
                delete(file);
            catch
                % another user's log in a shared tempdir: not ours to remove
            end
        end
    end
end

function failed = workerFailed(logFile)
    text = readLog(logFile);
    failed = ~isempty(regexp(text, '(Error|error:|usage:|No module named|not found)', 'once')) && ...
             isempty(strfind(text, 'another worker already serves'));
end

function text = readLog(logFile)
    text = '';
    fid = fopen(logFile, 'r');
    if fid >= 0
        text = fread(fid, [1, Inf], '*char');
        fclose(fid);
    end
end

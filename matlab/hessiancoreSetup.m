function info = hessiancoreSetup(varargin)
    % HESSIANCORESETUP  Check and configure the Python environment of the hessiancore toolbox.
    %   HESSIANCORESETUP checks the Python that the toolbox will use, prints what it found and exactly what
    %   to fix, and saves the choice (setpref group 'hessiancore') for later sessions.
    %   INFO = HESSIANCORESETUP(...) also returns a struct: Python (executable), PythonVersion, Torch,
    %   Bridge ('ok' or the import error), Release, Transport, Problems (cellstr of what to fix), Notes
    %   (cellstr of what setup changed, or what to run yourself), Ok.
    %
    %   HESSIANCORESETUP('Python', EXE) uses the Python executable EXE, e.g. a virtual environment's
    %     '/home/me/venvs/hc/bin/python' or 'C:\venvs\hc\Scripts\python.exe' (a pythonw.exe is replaced by
    %     the python.exe next to it: the windowed interpreter prints nothing).
    %   HESSIANCORESETUP('Transport', T) chooses how MATLAB reaches Python:
    %     'auto', 'server'  (default) a persistent Python worker that the toolbox starts on the first call
    %                       of a session and reuses: the Python start-up (seconds) is paid once
    %     'subprocess'      a separate 'python -m' process per call (seconds per call)
    %     'py'              MATLAB's py. interface, out of process; needs a MATLAB release that supports
    %                       that Python version, and sets pyenv (which persists across sessions) only when
    %                       saving
    %   HESSIANCORESETUP('ServerFolder', F) uses a worker you started yourself with
    %     python -m bridge.transport.matfile --serve F
    %   HESSIANCORESETUP('Save', false) only checks: nothing is saved and pyenv is not changed.
    %   HESSIANCORESETUP('Verbose', false) prints nothing.
    %
    %   Example:
    %     info = hessiancoreSetup('Save', false, 'Verbose', false);
    %     disp(info.Ok)
    %
    %   See also pyenv, dlhessian.
    opts = hcParseOptions('hessiancoreSetup', varargin);
    python = opts.Python;
    if isempty(python)
        python = hcPythonExecutable();
    end
    python = hcConsolePython(python);
    info = struct('Python', python, 'PythonVersion', '', 'Torch', '', 'Bridge', '', 'Release', '', ...
                  'Transport', lower(opts.Transport), 'Problems', {{}}, 'Notes', {{}}, 'Ok', false);
    if hcIsOctave()
        info.Release = ['Octave ', version()];
    else
        info.Release = ['R', version('-release')];
    end

    % What the Python reports about itself (the same PYTHONPATH rule as the transports).
    oldPath = hcSetPythonPath();
    [status, out] = system(sprintf('"%s" -m bridge.transport.check 2>&1', python));
    setenv('PYTHONPATH', oldPath);
    report = parseReport(out);
    if status ~= 0 || ~isfield(report, 'python')
        info.Problems{end + 1} = sprintf(['could not run "%s -m bridge.transport.check" (exit %d): %s\n', ...
                                          '  Fix: install Python >= 3.10 and hessiancore (pip install ', ...
                                          'hessiancore, or pip install -e on a\n  checkout), then run ', ...
                                          'hessiancoreSetup(''Python'', ''/path/to/python'').'], ...
                                         python, status, strtrim(out));
    else
        info.Python = report.executable;
        info.PythonVersion = report.python;
        info.Torch = report.torch;
        info.Bridge = report.bridge;
        ver = sscanf(report.python, '%d.%d');
        if numel(ver) < 2 || ver(1) ~= 3 || ver(2) < 10
            info.Problems{end + 1} = sprintf(['Python %s is too old: hessiancore needs Python >= 3.10.\n', ...
                                              '  Fix: hessiancoreSetup(''Python'', ', ...
                                              '''/path/to/python3.10-or-newer'').'], report.python);
        end
        if strncmp(report.torch, 'missing', 7)
            info.Problems{end + 1} = sprintf('PyTorch is not installed in %s.\n  Fix: "%s" -m pip install torch', ...
                                             report.executable, report.executable);
        end
        if ~strcmp(report.bridge, 'ok')
            info.Problems{end + 1} = sprintf(['hessiancore cannot be imported by %s: %s\n', ...
                                              '  Fix: "%s" -m pip install hessiancore   ', ...
                                              '(or pip install -e <hessiancore checkout>)'], ...
                                             report.executable, report.bridge, report.executable);
        end
        if isempty(info.Problems)
            [info.Transport, info.Notes] = hcChooseTransport(info.Transport, info.Python, info.PythonVersion, ...
                                                             info.Release, hcIsOctave(), opts.Save);
        end
    end
    if ~isempty(opts.ServerFolder) && ~exist(opts.ServerFolder, 'dir')
        info.Problems{end + 1} = sprintf(['''ServerFolder'' %s does not exist: start the worker first with\n', ...
                                          '  "%s" -m bridge.transport.matfile --serve %s'], ...
                                         opts.ServerFolder, info.Python, opts.ServerFolder);
    end
    info.Ok = isempty(info.Problems);
    if opts.Save && info.Ok
        setpref('hessiancore', 'Python', info.Python);
        setpref('hessiancore', 'Transport', info.Transport);
        setpref('hessiancore', 'ServerFolder', opts.ServerFolder);
    end
    if opts.Verbose
        printInfo(info);
    end
end

function report = parseReport(out)
    report = struct();
    lines = regexp(out, '\r?\n', 'split');
    for i = 1:numel(lines)
        tok = regexp(lines{i}, '^(\w+)=(.*)$', 'tokens', 'once');
        if ~isempty(tok)
            report.(tok{1}) = strtrim(tok{2});
        end
    end
end

function printInfo(info)
    fprintf('hessiancore setup (%s)\n', info.Release);
    fprintf('  Python     %s  (%s)\n', info.Python, info.PythonVersion);
    fprintf('  PyTorch    %s\n', info.Torch);
    fprintf('  bridge     %s\n', info.Bridge);
    fprintf('  transport  %s\n', info.Transport);
    for i = 1:numel(info.Notes)
        fprintf('  note: %s\n', info.Notes{i});
    end
    if info.Ok
        fprintf('  OK: ready.\n');
    else
        fprintf('  Problems:\n');
        for i = 1:numel(info.Problems)
            fprintf('  - %s\n', info.Problems{i});
        end
    end
end

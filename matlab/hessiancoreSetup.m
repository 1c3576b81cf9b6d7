function info = hessiancoreSetup(varargin)
    % HESSIANCORESETUP  Check and configure the Python environment of the hessiancore toolbox.
    %   HESSIANCORESETUP checks the Python that the toolbox will use, prints what it found and exactly what
    %   to fix, and saves the choice (setpref group 'hessiancore') for later sessions.
    %   INFO = HESSIANCORESETUP(...) also returns a struct: Python (executable), PythonVersion, Torch,
    %   Bridge ('ok' or the import error), Release, Transport, Problems (cellstr of what to fix), Ok.
    %
    %   HESSIANCORESETUP('Python', EXE) uses the Python executable EXE, e.g. a virtual environment's
    %     '/home/me/venvs/hc/bin/python' or 'C:\venvs\hc\Scripts\python.exe'.
    %   HESSIANCORESETUP('Transport', T) chooses how MATLAB reaches Python:
    %     'auto'        (default) 'py' when this MATLAB release supports that Python version through
    %                   pyenv and pyenv uses the same executable, else 'subprocess'
    %     'subprocess'  a separate 'python -m' process per call, exchanging .mat files: any Python version,
    %                   MATLAB or GNU Octave; costs the Python start-up (a few seconds) per call
    %     'py'          MATLAB's py. interface (pyenv; 'OutOfProcess' recommended with PyTorch)
    %     'server'      a Python worker started once by the user with
    %                     python -m bridge.transport.matfile --serve FOLDER
    %                   (the start-up paid once); give the same FOLDER with 'ServerFolder'
    %   HESSIANCORESETUP('Save', false) checks without saving.
    %
    %   Example:
    %     hessiancoreSetup('Python', '/home/me/venvs/hc/bin/python');
    %
    %   See also pyenv, dlhessian.
    isText = @(x) ischar(x) || (isstring(x) && isscalar(x));
    p = inputParser();
    p.FunctionName = 'hessiancoreSetup';
    p.addParameter('Python', '', isText);
    p.addParameter('Transport', 'auto', ...
                   @(x) isText(x) && any(strcmpi(char(x), {'auto', 'subprocess', 'py', 'server'})));
    p.addParameter('ServerFolder', '', isText);
    p.addParameter('Save', true, @(x) islogical(x) || isnumeric(x));
    p.addParameter('Verbose', true, @(x) islogical(x) || isnumeric(x));
    try
        p.parse(varargin{:});
    catch err
        error('hessiancore:invalidOption', 'hessiancoreSetup: %s', err.message);
    end
    opts = p.Results;
    python = char(opts.Python);
    if isempty(python)
        python = hcPythonExecutable();
    end
    info = struct('Python', python, 'PythonVersion', '', 'Torch', '', 'Bridge', '', 'Release', '', ...
                  'Transport', lower(char(opts.Transport)), 'Problems', {{}}, 'Ok', false);
    if hcIsOctave()
        info.Release = ['Octave ', version()];
    else
        info.Release = ['R', version('-release')];
    end

    % What the Python reports about itself (the same PYTHONPATH rule as the subprocess transport).
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
        info.Transport = chooseTransport(info, ver);
    end
    if strcmp(info.Transport, 'server') && ~exist(char(opts.ServerFolder), 'dir')
        info.Problems{end + 1} = sprintf(['the server transport needs ''ServerFolder'', the folder of a ', ...
                                          'worker started with\n  "%s" -m bridge.transport.matfile --serve FOLDER'], ...
                                         info.Python);
    end
    info.Ok = isempty(info.Problems);
    if opts.Save && info.Ok
        setpref('hessiancore', 'Python', info.Python);
        setpref('hessiancore', 'Transport', info.Transport);
        if strcmp(info.Transport, 'server')
            setpref('hessiancore', 'ServerFolder', char(opts.ServerFolder));
        end
    end
    if opts.Verbose
        printInfo(info);
    end
end

function transport = chooseTransport(info, ver)
    % 'py' only when asked for (or auto) and MATLAB's pyenv can load this very Python.
    transport = info.Transport;
    if strcmp(transport, 'server')
        return
    end
    if hcIsOctave()
        if strcmp(transport, 'py')
            warning('hessiancore:setup', 'GNU Octave has no py. interface: using the subprocess transport');
        end
        transport = 'subprocess';
        return
    end
    range = hcSupportedPython(version('-release'));
    supported = numel(ver) >= 2 && ~isempty(range) && ver(2) >= range(1) && ver(2) <= range(2);
    if strcmp(transport, 'py') && ~supported
        warning('hessiancore:setup', ['MATLAB %s does not support Python %s through py. (see ', ...
                                      'hcSupportedPython): using the subprocess transport'], ...
                info.Release, info.PythonVersion);
        transport = 'subprocess';
    elseif strcmp(transport, 'auto')
        transport = 'subprocess';
        if supported
            env = pyenv();
            if strcmp(char(env.Executable), info.Python) || strcmp(char(env.Status), 'NotLoaded')
                transport = 'py';
            end
        end
    end
    if strcmp(transport, 'py')
        env = pyenv();
        if ~strcmp(char(env.Executable), info.Python)
            if strcmp(char(env.Status), 'Loaded')
                warning('hessiancore:setup', ['pyenv has already loaded %s; restart MATLAB to use %s ', ...
                                              'through py. (using the subprocess transport for now)'], ...
                        char(env.Executable), info.Python);
                transport = 'subprocess';
            else
                pyenv('Version', info.Python, 'ExecutionMode', 'OutOfProcess');
            end
        end
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
    if info.Ok
        fprintf('  OK: ready.\n');
    else
        fprintf('  Problems:\n');
        for i = 1:numel(info.Problems)
            fprintf('  - %s\n', info.Problems{i});
        end
    end
end

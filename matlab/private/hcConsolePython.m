function python = hcConsolePython(python)
    % HCCONSOLEPYTHON  The console interpreter for a Python executable (internal).
    %   PYTHON = HCCONSOLEPYTHON(PYTHON): on Windows pyenv may report pythonw.exe, the windowed interpreter,
    %   which prints nothing on standard output, so the environment check and the worker would fail
    %   silently. pythonw.exe (or pythonw) becomes python.exe (python) from the same folder; when that does
    %   not exist the error 'hessiancore:setup' says which executable to give hessiancoreSetup.
    [folder, name, ext] = fileparts(python);
    if ~strcmpi(name, 'pythonw')
        return
    end
    console = fullfile(folder, ['python', ext]);
    if ~exist(console, 'file')
        error('hessiancore:setup', ['%s is the windowed Python, which prints nothing, and %s does not ', ...
                                    'exist: run hessiancoreSetup(''Python'', ''C:\\path\\to\\python.exe'')'], ...
              python, console);
    end
    python = console;
end

function [transport, notes] = hcChooseTransport(requested, python, pythonVersion, release, inOctave, apply)
    % HCCHOOSETRANSPORT  The transport hessiancoreSetup settles on, and what it did or what to do (internal).
    %   [TRANSPORT, NOTES] = HCCHOOSETRANSPORT(REQUESTED, PYTHON, VERSION, RELEASE, INOCTAVE, APPLY):
    %     'auto', 'server'  'server': the persistent worker the toolbox starts itself (fast, any Python
    %                       version, MATLAB or Octave, and no change to pyenv)
    %     'subprocess'      as asked
    %     'py'              MATLAB's py. interface, when RELEASE supports the Python VERSION
    %                       (hcSupportedPython) and pyenv can use PYTHON; otherwise 'server', with a warning
    %   pyenv('Version', PYTHON, 'ExecutionMode', 'OutOfProcess') changes a setting that persists across
    %   MATLAB sessions, so it is called only when APPLY is true (hessiancoreSetup with 'Save', true); else
    %   NOTES (a cellstr) gives the command to run.
    notes = {};
    transport = requested;
    if any(strcmp(requested, {'auto', 'server'}))
        transport = 'server';
        return
    end
    if ~strcmp(requested, 'py')
        return
    end
    transport = 'server';
    if inOctave
        warning('hessiancore:setup', 'GNU Octave has no py. interface: using the persistent worker (''server'')');
        return
    end
    ver = sscanf(pythonVersion, '%d.%d');
    range = hcSupportedPython(regexprep(release, '^R', ''));
    if numel(ver) < 2 || isempty(range) || ver(2) < range(1) || ver(2) > range(2)
        warning('hessiancore:setup', ['MATLAB %s does not support Python %s through py. (see ', ...
                                      'hcSupportedPython): using the persistent worker (''server'')'], ...
                release, pythonVersion);
        return
    end
    env = pyenv();
    if strcmp(char(env.Executable), python)
        transport = 'py';
    elseif strcmp(char(env.Status), 'Loaded')
        warning('hessiancore:setup', ['pyenv has already loaded %s; restart MATLAB to use %s through py. ', ...
                                      '(using the persistent worker for now)'], char(env.Executable), python);
    elseif apply
        pyenv('Version', python, 'ExecutionMode', 'OutOfProcess');
        transport = 'py';
        notes{end + 1} = sprintf(['pyenv now uses %s out of process; this pyenv setting persists across ', ...
                                  'MATLAB sessions'], python);
    else
        transport = 'py';
        notes{end + 1} = sprintf(['not applied (''Save'', false): the py. transport needs ', ...
                                  'pyenv(''Version'', ''%s'', ''ExecutionMode'', ''OutOfProcess'')'], python);
    end
end

function [opts, onMatlab] = hcBackendOptions(caller, args)
    % HCBACKENDOPTIONS  The wrappers' options, and which backend computes (internal).
    %   [OPTS, ONMATLAB] = HCBACKENDOPTIONS(CALLER, ARGS) parses ARGS with hcParseOptions (the options of
    %   hcOptions(CALLER)) and decides the backend from
    %     'ModelLoss'  function handle LOSS = F(NET, X, T), e.g. the modelLoss a custom training loop passes
    %                  to dlfeval (extra outputs ignored); selects the MATLAB backend
    %     'Backend'    'auto' (default: 'matlab' with 'ModelLoss', else 'python'), 'python' or 'matlab'
    %                  ('matlab' with a 'Loss' name computes MATLAB's own loss function in MATLAB)
    %   ONMATLAB is true when everything is computed in MATLAB by automatic differentiation
    %   (hcMatlabBackend), false for the Python bridge. Conflicts raise 'hessiancore:invalidOption', as does
    %   a non-empty 'PythonOptions' on the MATLAB backend (nothing would read it).
    opts = hcParseOptions(caller, args);
    lossGiven = ~isempty(opts.Loss);   % (without it the loss is chosen from the network: hcDefaultLoss)
    if ~isempty(opts.ModelLoss)
        if strcmp(opts.Backend, 'python')
            error('hessiancore:invalidOption', ['%s: ''ModelLoss'' is computed in MATLAB by automatic ', ...
                                                'differentiation; it needs ''Backend'', ''matlab'' ', ...
                                                '(or ''auto'')'], caller);
        end
        if lossGiven
            error('hessiancore:invalidOption', ['%s: give ''Loss'' (a loss name) or ''ModelLoss'' ', ...
                                                '(a function), not both'], caller);
        end
        opts.Backend = 'matlab';
    elseif strcmp(opts.Backend, 'auto')
        opts.Backend = 'python';
    end
    onMatlab = strcmp(opts.Backend, 'matlab');
    if onMatlab && ~isempty(fieldnames(opts.PythonOptions))
        error('hessiancore:invalidOption', ['%s: ''PythonOptions'' (%s) are keyword arguments of the Python ', ...
                                            'bridge, which the MATLAB backend does not run; remove them, or ', ...
                                            'use ''Backend'', ''python'' with a ''Loss'' name'], caller, ...
              strjoin(reshape(fieldnames(opts.PythonOptions), 1, []), ', '));
    end
end

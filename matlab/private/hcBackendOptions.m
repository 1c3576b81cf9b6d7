function [opts, onMatlab] = hcBackendOptions(caller, args, extra)
    % HCBACKENDOPTIONS  The wrappers' options with 'ModelLoss' and 'Backend', and which backend computes (internal).
    %   [OPTS, ONMATLAB] = HCBACKENDOPTIONS(CALLER, ARGS, EXTRA) parses ARGS with hcParseOptions (common
    %   options and the caller's own EXTRA, an Mx3 cell {name, default, validator}) plus
    %     'ModelLoss'  function handle LOSS = F(NET, X, T), e.g. the modelLoss a custom training loop passes
    %                  to dlfeval (extra outputs ignored); selects the MATLAB backend
    %     'Backend'    'auto' (default: 'matlab' with 'ModelLoss', else 'python'), 'python' or 'matlab'
    %                  ('matlab' with a 'Loss' name computes MATLAB's own loss function in MATLAB)
    %   ONMATLAB is true when everything is computed in MATLAB by automatic differentiation
    %   (hcMatlabBackend), false for the Python bridge. Conflicts raise 'hessiancore:invalidOption'.
    if nargin < 3
        extra = cell(0, 3);
    end
    isText = @(x) ischar(x) || (isstring(x) && isscalar(x));
    own = {'ModelLoss', [], @(f) isempty(f) || isa(f, 'function_handle'); ...
           'Backend', 'auto', @(x) isText(x) && any(strcmpi(char(x), {'auto', 'python', 'matlab'}))};
    opts = hcParseOptions(caller, args, [extra; own]);
    opts.Backend = lower(char(opts.Backend));
    lossGiven = false;   % explicitly, as 'Loss', value (or a field of an options structure)
    for i = 1:numel(args)
        a = args{i};
        if (isText(a) && mod(i, 2) == 1 && strcmpi(char(a), 'Loss')) || (isstruct(a) && isfield(a, 'Loss'))
            lossGiven = true;
        end
    end
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
end

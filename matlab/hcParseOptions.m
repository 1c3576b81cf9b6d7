function opts = hcParseOptions(caller, args, extra)
    % HCPARSEOPTIONS  Name-value options shared by the hessiancore wrappers, through inputParser (internal).
    %   OPTS = HCPARSEOPTIONS(CALLER, ARGS, EXTRA) parses the cell ARGS of 'Name', value pairs (in MATLAB
    %   also Name=Value) and returns a struct with char values where text was given. EXTRA is an Mx3 cell
    %   {name, default, validator} of the caller's own options. Common options:
    %     'Loss'           'mse' (half mean squared error, as MATLAB's mse), 'crossentropy' (on
    %                      probabilities), 'binary-crossentropy', 'l2loss', 'l1loss', 'huber', ...
    %     'LossOptions'    struct of loss options (e.g. struct('NormalizationFactor', 'all-elements'))
    %     'DataFormat'     format of X when it is numeric or an unformatted dlarray, e.g. 'CB', 'SSCB'
    %     'TargetFormat'   format of T in the same case ('' lets Python use the network output's format)
    %     'DataType'       'double' (default) or 'single': precision of the computation in Python
    %     'MemoryBudget'   bytes (or text such as '2GB') Python may allocate; [] for its default
    %     'Output'         'matrix' (default) or 'table' (shaped like NET.Learnables)
    %     'Transport'      'auto' (default: hessiancoreSetup's choice, else 'subprocess'), 'subprocess',
    %                      'py' (MATLAB's py.), 'server' (a running 'python -m bridge.transport.matfile --serve')
    %     'Python'         Python executable for the subprocess transport (default: hessiancoreSetup's)
    %     'PythonOptions'  struct of further keyword arguments passed to the Python function as they are
    %   Invalid options raise 'hessiancore:invalidOption'.
    if nargin < 3
        extra = cell(0, 3);
    end
    isText = @(x) ischar(x) || (isstring(x) && isscalar(x));
    isStruct = @(x) isstruct(x) && isscalar(x);
    p = inputParser();
    p.FunctionName = caller;
    p.addParameter('Loss', 'mse', isText);
    p.addParameter('LossOptions', struct(), isStruct);
    p.addParameter('DataFormat', '', isText);
    p.addParameter('TargetFormat', '', isText);
    p.addParameter('DataType', 'double', @(x) isText(x) && any(strcmpi(char(x), {'double', 'single'})));
    p.addParameter('MemoryBudget', [], @(x) isempty(x) || isText(x) || (isnumeric(x) && isscalar(x) && x > 0));
    p.addParameter('Output', 'matrix', @(x) isText(x) && any(strcmpi(char(x), {'matrix', 'table'})));
    p.addParameter('Transport', 'auto', ...
                   @(x) isText(x) && any(strcmpi(char(x), {'auto', 'subprocess', 'py', 'server'})));
    p.addParameter('Python', '', isText);
    p.addParameter('PythonOptions', struct(), isStruct);
    for i = 1:size(extra, 1)
        p.addParameter(extra{i, 1}, extra{i, 2}, extra{i, 3});
    end
    try
        p.parse(args{:});
    catch err
        error('hessiancore:invalidOption', '%s: %s', caller, err.message);
    end
    opts = p.Results;
    names = fieldnames(opts);
    for i = 1:numel(names)
        if isstring(opts.(names{i}))
            opts.(names{i}) = char(opts.(names{i}));
        end
    end
    opts.Output = lower(opts.Output);
    opts.Transport = lower(opts.Transport);
    opts.DataType = lower(opts.DataType);
end

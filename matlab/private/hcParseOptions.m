function opts = hcParseOptions(caller, args)
    % HCPARSEOPTIONS  Parse the name-value options of a hessiancore function (internal).
    %   OPTS = HCPARSEOPTIONS(CALLER, ARGS) parses the cell ARGS of 'Name', value pairs (in MATLAB also
    %   Name=Value; names are case-insensitive) against hcOptions(CALLER) and returns a struct with every
    %   option, defaults filled in. Text arrives as char at any depth (string scalars and arrays inside
    %   'LossOptions' and 'PythonOptions' too, see hcPlainOption), so that everything crosses to Python.
    %   Errors ('hessiancore:invalidOption') name the option and say what it allows; an unknown name lists
    %   the valid ones.
    %
    %   The common options (hcOptions): 'Loss' (default: 'crossentropy' when the network ends in a
    %   softmaxLayer, else 'mse'), 'LossOptions', 'DataFormat', 'TargetFormat', 'DataType', 'MemoryBudget',
    %   'Transport', 'Python', 'PythonOptions'; 'Output' where the result can be a table.
    spec = hcOptions(caller);
    names = spec(:, 1);
    opts = cell2struct(spec(:, 2), names, 1);
    if mod(numel(args), 2) ~= 0
        error('hessiancore:invalidOption', '%s: options must come in name-value pairs (got %d values)', caller, ...
              numel(args));
    end
    for i = 1:2:numel(args)
        name = args{i};
        if ~((ischar(name) && isrow(name)) || (isstring(name) && isscalar(name)))
            error('hessiancore:invalidOption', '%s: argument %d must be an option name (text), got a %s', ...
                  caller, i, class(name));
        end
        k = find(strcmpi(char(name), names), 1);
        if isempty(k)
            error('hessiancore:invalidOption', '%s: unknown option ''%s''. Valid options: %s.', caller, ...
                  char(name), strjoin(names', ', '));
        end
        [ok, value, allowed] = hcCheckOption(spec{k, 3}, spec{k, 4}, args{i + 1});
        if ~ok && strcmp(names{k}, 'Loss') && isa(args{i + 1}, 'function_handle')
            error('hessiancore:invalidOption', ['%s: ''Loss'' takes a loss name (%s); got the function %s. ', ...
                                                'For a loss function of your own give ''ModelLoss'' instead, ', ...
                                                'e.g. ''ModelLoss'', ', ...
                                                '@(net, X, T) crossentropy(predict(net, X), T) ', ...
                                                '(computed in MATLAB by automatic differentiation).'], caller, ...
                  allowed, func2str(args{i + 1}));
        end
        if ~ok
            error('hessiancore:invalidOption', '%s: ''%s'' must be %s; got %s.', caller, names{k}, allowed, ...
                  describe(args{i + 1}));
        end
        if strcmp(spec{k, 3}, 'function')
            opts.(names{k}) = value;   % stays in MATLAB (the MATLAB backend); never sent to Python
        else
            opts.(names{k}) = hcPlainOption(value, sprintf('''%s''', names{k}));
        end
    end
end

function text = describe(x)
    if ischar(x) && (isempty(x) || isrow(x))
        text = ['''', x, ''''];
    elseif isstring(x) && isscalar(x)
        text = ['"', char(x), '"'];
    elseif (isnumeric(x) || islogical(x)) && isscalar(x) && isreal(x)
        text = num2str(double(x), 6);
    else
        text = sprintf('a %s %s', strjoin(arrayfun(@num2str, size(x), 'UniformOutput', false), 'x'), class(x));
    end
end

function prob = hcModelProblem(net, X, T, opts)
    % HCMODELPROBLEM  Network, minibatches, loss and weights for the MATLAB backend (internal).
    %   PROB = HCMODELPROBLEM(NET, X, T, OPTS) prepares what hcModelEval differentiates:
    %     Net      a copy of NET whose learnables are cast to OPTS.DataType ('double' by default); NET
    %              itself is not changed (its values keep their storage, single or GPU)
    %     X, T     1xM cells of minibatches cast likewise: dlarray objects keep their format, numeric
    %              data get 'DataFormat' / 'TargetFormat' (numeric targets without one stay numeric)
    %     Loss     the function LOSS = F(NET, X, T): OPTS.ModelLoss, or MATLAB's loss function named by
    %              OPTS.Loss (with OPTS.LossOptions) on predict(NET, X), inference mode like the Python side
    %     Weights  1xM, and Mean: the loss over all minibatches is sum(Weights .* L_b) / sum(Weights)
    %              when Mean, else sum(L_b). Weights are the observations of each minibatch (size of X
    %              along 'B', 1 without one) for NormalizationFactor 'batch-size' (default), numel(T_b)
    %              for 'all-elements'; 'none' (a loss summed over observations) adds the losses.
    %     Sizes, Counts, P, Theta (the learnables as one P x 1 double vector), DataType, Name,
    %     MemoryBudget
    %   Nothing is evaluated here: hcModelEval names the errors of the first evaluation.
    if ~isobject(net) || ~isprop(net, 'Learnables')
        error('hessiancore:invalidInput', 'NET must be a dlnetwork, got a %s', class(net));
    end
    prob = struct();
    prob.DataType = opts.DataType;
    prob.MemoryBudget = opts.MemoryBudget;
    multi = iscell(X);
    if multi ~= iscell(T) || (multi && numel(X) ~= numel(T))
        error('hessiancore:invalidInput', 'X and T must both be one minibatch or cell arrays of the same length');
    end
    if ~multi
        X = {X};
        T = {T};
    end
    if isempty(X)
        error('hessiancore:invalidInput', 'X is an empty cell array; give at least one minibatch');
    end
    named = isempty(opts.ModelLoss);
    if named && isempty(opts.Loss)
        opts.Loss = hcDefaultLoss(net);
    end
    [prob.Loss, prob.Name, normalization] = lossFunction(opts, named);
    M = numel(X);
    prob.X = cell(1, M);
    prob.T = cell(1, M);
    prob.Weights = ones(1, M);
    for b = 1:M
        prob.X{b} = prepare(X{b}, opts.DataFormat, prob.DataType, sprintf('X{%d}', b), named, true);
        prob.T{b} = prepare(T{b}, opts.TargetFormat, prob.DataType, sprintf('T{%d}', b), named, false);
        switch normalization
            case 'batch-size'
                if isa(prob.X{b}, 'dlarray') && ~isempty(dims(prob.X{b}))
                    batch = finddim(prob.X{b}, 'B');
                    if ~isempty(batch)
                        prob.Weights(b) = size(prob.X{b}, batch);
                    end
                elseif M > 1
                    error('hessiancore:invalidInput', ['X{%d} has no format, so its number of observations is ', ...
                                                       'unknown: pass formatted dlarray objects or give ', ...
                                                       '''DataFormat'''], b);
                end
            case 'all-elements'
                prob.Weights(b) = numel(prob.T{b});
        end
    end
    prob.Mean = ~strcmp(normalization, 'none');
    [prob.Sizes, prob.Counts] = hcLearnableSizes(net);
    prob.P = sum(prob.Counts);
    values = net.Learnables.Value;
    parts = cell(numel(values), 1);
    copies = cell(numel(values), 1);
    for i = 1:numel(values)
        v = values{i};
        if isa(v, 'dlarray')
            v = extractdata(v);
        end
        parts{i} = hcToDouble(v);
        parts{i} = parts{i}(:);
        copies{i} = castTo(v, prob.DataType);
    end
    prob.Theta = vertcat(parts{:});
    prob.Net = hcWithValues(net, copies);
end

function [fcn, name, normalization] = lossFunction(opts, named)
    lossOpts = opts.LossOptions;
    normalization = 'batch-size';
    if isfield(lossOpts, 'NormalizationFactor')
        normalization = lower(char(lossOpts.NormalizationFactor));
        if ~any(strcmp(normalization, {'batch-size', 'all-elements', 'none'}))
            error('hessiancore:invalidOption', ['NormalizationFactor must be ''batch-size'', ''all-elements'' or ', ...
                                                '''none'' for the MATLAB backend; got ''%s'''], normalization);
        end
    end
    if ~named
        fcn = opts.ModelLoss;
        name = ['ModelLoss ', func2str(fcn)];
        extra = setdiff(fieldnames(lossOpts), {'NormalizationFactor'});
        if ~isempty(extra)
            error('hessiancore:invalidOption', ['with ''ModelLoss'', LossOptions may only declare how your ', ...
                                                'loss is normalized (NormalizationFactor); got %s'], ...
                  strjoin(reshape(extra, 1, []), ', '));
        end
        return
    end
    loss = lower(char(opts.Loss));
    name = ['loss ''', loss, ''''];
    args = {};
    known = {'NormalizationFactor', 'TransitionPoint', 'ClassificationMode'};
    fields = fieldnames(lossOpts);
    for i = 1:numel(fields)
        if ~any(strcmp(fields{i}, known))
            error('hessiancore:invalidOption', 'LossOptions field ''%s'' is not supported (supported: %s)', ...
                  fields{i}, strjoin(known, ', '));
        end
        args = [args, fields(i), {lossOpts.(fields{i})}]; %#ok<AGROW>
    end
    switch loss
        case 'mse'
            if ~isempty(args)
                error('hessiancore:invalidOption', ['MATLAB''s mse has no options; use ''l2loss'' ', ...
                                                    '(not halved) with LossOptions']);
            end
            lossFcn = @(Y, T) mse(Y, T);
        case 'l2loss'
            lossFcn = @(Y, T) l2loss(Y, T, args{:});
        case 'l1loss'
            lossFcn = @(Y, T) l1loss(Y, T, args{:});
        case 'huber'
            lossFcn = @(Y, T) huber(Y, T, args{:});
        case 'crossentropy'
            lossFcn = @(Y, T) crossentropy(Y, T, args{:});
        case 'binary-crossentropy'
            lossFcn = @(Y, T) crossentropy(Y, T, 'ClassificationMode', 'multilabel', args{:});
        case 'index-crossentropy'
            lossFcn = @(Y, T) indexcrossentropy(Y, T, args{:});
        otherwise
            error('hessiancore:invalidOption', ['the MATLAB backend computes the losses mse, l2loss, l1loss, ', ...
                                                'huber, crossentropy, binary-crossentropy and ', ...
                                                'index-crossentropy, or ''ModelLoss''; got ''%s'''], loss);
    end
    fcn = @(net, X, T) lossFcn(predict(net, X), T);
end

function x = prepare(x, fmt, type, what, named, isX)
    % One minibatch cast to TYPE; dlarray objects keep their format (or get FMT), numeric data get FMT.
    if isa(x, 'dlarray')
        own = dims(x);
        if ~isempty(own) && ~isempty(fmt) && ~strcmp(own, fmt)
            error('hessiancore:invalidInput', '%s is a dlarray formatted ''%s'' but the format option says ''%s''', ...
                  what, own, fmt);
        end
        if isempty(own)
            own = fmt;
        end
        x = formatted(castTo(extractdata(x), type), own);
    elseif isnumeric(x) || islogical(x)
        if ~isempty(fmt)
            x = formatted(castTo(x, type), fmt);
        elseif isX
            x = dlarray(castTo(x, type));
        else
            x = castTo(x, type);
        end
    else
        error('hessiancore:invalidInput', '%s must be a dlarray, a numeric array or a cell array of them; got a %s', ...
              what, class(x));
    end
    if isX && named && isempty(dims(x))
        error('hessiancore:invalidInput', ['X has no format: pass a formatted dlarray, e.g. dlarray(X, ''CB''), ', ...
                                           'or give ''DataFormat'', ''CB''']);
    end
end

function x = castTo(x, type)
    % A numeric array (or gpuArray, which stays on the GPU) in TYPE; dlarray values stay dlarray objects.
    if isa(x, 'dlarray')
        x = formatted(cast(extractdata(x), type), dims(x));
    else
        x = cast(x, type);
    end
end

function x = formatted(data, fmt)
    % dlarray(data, fmt), or unformatted for an empty fmt (never dlarray(data, '')).
    if isempty(fmt)
        x = dlarray(data);
    else
        x = dlarray(data, fmt);
    end
end

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
    %   With a loss name the network is run once per minibatch (predict, untraced), as the Python bridge
    %   does before any work: T must have the size of the network output ('hessiancore:invalidInput' naming
    %   the minibatch, both sizes and the output layer), and the crossentropy family needs outputs in
    %   [0, 1] (the Python backend's message). A 'ModelLoss' is not evaluated here: hcModelEval names the
    %   errors of its first evaluation.
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
    if named
        checkOutputs(prob, lower(char(opts.Loss)), opts.LossOptions);
    end
end

function checkOutputs(prob, loss, lossOpts)
    % What the Python bridge checks before any work (bridge.api.prepare, MatlabLoss.check_outputs), with
    % the same identifiers and wording: the target size per minibatch, and probabilities for crossentropy.
    [layer, short] = outputLayer(prob.Net);
    multilabel = strcmp(loss, 'binary-crossentropy') || ...
                 (isfield(lossOpts, 'ClassificationMode') && strcmpi(char(lossOpts.ClassificationMode), 'multilabel'));
    for b = 1:numel(prob.X)
        Y = predict(prob.Net, prob.X{b});
        T = prob.T{b};
        fmt = '';
        if isa(Y, 'dlarray')
            fmt = dims(Y);
            Y = extractdata(Y);
        end
        if ~isequal(size(T), size(Y))
            error('hessiancore:invalidInput', ['minibatch %d: T has size %s but the network output (layer ''%s'', ', ...
                                               '%s) has size %s%s; for the loss ''%s'' T must have the size of ', ...
                                               'the output'], b, sizeText(size(T)), layer, short, ...
                  sizeText(size(Y)), formatText(fmt), loss);
        end
        if any(strcmp(loss, {'crossentropy', 'binary-crossentropy'})) && ~isempty(Y)
            lo = double(min(Y(:)));
            hi = double(max(Y(:)));
            if ~(lo >= 0 && hi <= 1 + 1e-6)
                if multilabel
                    advice = 'sigmoidLayer';
                else
                    advice = ['softmaxLayer (sigmoidLayer for ''binary-crossentropy'' or ClassificationMode ', ...
                              '''multilabel'')'];
                end
                error('hessiancore:invalidInput', ['%s takes probabilities, but the network output (layer ''%s'', ', ...
                                                   '%s) has values in [%.4g, %.4g]. End the network with a %s, or ', ...
                                                   'choose a loss for unbounded outputs such as ''mse'''], loss, ...
                      layer, short, lo, hi, advice);
            end
        end
    end
end

function [name, short] = outputLayer(net)
    % The name and class (last part) of the network's output layer.
    layers = net.Layers;
    k = numel(layers);
    if isprop(net, 'OutputNames') && ~isempty(net.OutputNames)
        for i = 1:numel(layers)
            layer = layers(i);
            if strcmp(char(layer.Name), char(net.OutputNames{1}))
                k = i;
            end
        end
    end
    layer = layers(k);
    name = char(layer.Name);
    parts = strsplit(class(layer), '.');
    short = parts{end};
end

function text = sizeText(sz)
    text = strjoin(arrayfun(@num2str, sz, 'UniformOutput', false), 'x');
end

function text = formatText(fmt)
    text = '';
    if ~isempty(fmt)
        text = sprintf(' (format ''%s'')', fmt);
    end
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
            % indexcrossentropy (R2024b) is not computed on this backend: refused by name, before any work.
            error('hessiancore:invalidOption', ['''index-crossentropy'' is not available on the MATLAB backend: ', ...
                                                'use ''Backend'', ''python'' (the default) with it, or ''Loss'', ', ...
                                                '''crossentropy'' with one-hot targets, e.g. ', ...
                                                'T = onehotencode(...) or full(sparse(T, 1:N, 1, C, N))']);
        otherwise
            error('hessiancore:invalidOption', ['the MATLAB backend computes the losses mse, l2loss, l1loss, ', ...
                                                'huber, crossentropy, binary-crossentropy and ', ...
                                                'index-crossentropy, or ''ModelLoss''; got ''%s'''], loss);
    end
    fcn = @(net, X, T) lossFcn(predict(net, X), T);
end

function x = prepare(x, fmt, type, what, named, isX)
    % One minibatch cast to TYPE; dlarray objects keep their format (or get FMT), numeric data get FMT.
    own = hcFormatOf(x, fmt, what);
    if isa(x, 'dlarray')
        x = formatted(castTo(extractdata(x), type), own);
    elseif ~isempty(fmt)
        x = formatted(castTo(x, type), fmt);
    elseif isX
        x = dlarray(castTo(x, type));
    else
        x = castTo(x, type);
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

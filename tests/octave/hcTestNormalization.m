function value = hcTestNormalization(value, kind, inputSize, name)
    % Validate an input layer's Normalization or one of its statistics, as documented (test doubles only).
    %   hcTestNormalization(VALUE, 'mode') accepts 'zerocenter', 'zscore', 'rescale-symmetric',
    %   'rescale-zero-one', 'none' or a function handle (featureInputLayer, imageInputLayer,
    %   image3dInputLayer and sequenceInputLayer pages:
    %   https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.featureinputlayer.html,
    %   .../nnet.cnn.layer.imageinputlayer.html, .../nnet.cnn.layer.image3dinputlayer.html,
    %   .../nnet.cnn.layer.sequenceinputlayer.html).
    %   hcTestNormalization(VALUE, 'vector', INPUTSIZE, NAME): Mean, StandardDeviation, Min or Max of a
    %   feature or vector-sequence input: [], a scalar, or an InputSize-by-1 vector.
    %   hcTestNormalization(VALUE, 'image', INPUTSIZE, NAME): of an image input: [], a scalar, a
    %   1x1x...xC array (per channel) or an array of size InputSize (per element).
    %   Y = hcTestNormalization(LAYER, 'apply', X): a feature or sequence input layer's normalization of X
    %   (channels first), the pages' formulas per channel (Mean, StandardDeviation, Min, Max: scalar or
    %   InputSize-by-1): zerocenter X - Mean; zscore (X - Mean) ./ StandardDeviation; rescale-symmetric to
    %   [-1, 1] and rescale-zero-one to [0, 1] from Min and Max; a function handle f: Y = f(X) (the pages:
    %   "the function must be of the form Y = func(X)").
    switch kind
        case 'apply'
            value = applied(value, inputSize);
        case 'mode'
            if isa(value, 'function_handle')
                return
            end
            value = hcTestCheck(value, 'member', 'Normalization', ...
                                {'zerocenter', 'zscore', 'rescale-symmetric', 'rescale-zero-one', 'none'});
        case 'vector'
            value = hcTestCheck(value, 'numeric', name);
            ok = isempty(value) || isscalar(value) || isempty(inputSize) || isequal(size(value), [inputSize, 1]);
            if ~ok
                error('hessiancoreTest:invalidProperty', '%s must be [], a scalar or a %d-by-1 vector', name, ...
                      inputSize);
            end
        case 'image'
            value = hcTestCheck(value, 'numeric', name);
            sz = size(value);
            perChannel = [ones(1, numel(inputSize) - 1), inputSize(end)];
            ok = isempty(value) || isscalar(value) || isempty(inputSize) || ...
                 isequal(sz, trimmed(perChannel)) || isequal(sz, trimmed(inputSize));
            if ~ok
                error('hessiancoreTest:invalidProperty', '%s must be [], a scalar, a [%s] or a [%s] array', name, ...
                      num2str(perChannel), num2str(inputSize));
            end
    end
end

function Y = applied(layer, X)
    norm = layer.Normalization;
    if isa(norm, 'function_handle')
        Y = norm(X);
        return
    end
    switch norm
        case 'none'
            Y = X;
        case 'zerocenter'
            Y = X - layer.Mean(:);
        case 'zscore'
            Y = (X - layer.Mean(:)) ./ layer.StandardDeviation(:);
        case 'rescale-symmetric'
            Y = 2 * (X - layer.Min(:)) ./ (layer.Max(:) - layer.Min(:)) - 1;
        case 'rescale-zero-one'
            Y = (X - layer.Min(:)) ./ (layer.Max(:) - layer.Min(:));
        otherwise
            error('hessiancoreTest:notImplemented', 'Normalization ''%s'' is not in the double', norm);
    end
end

function sz = trimmed(sz)
    % size() drops trailing singleton dimensions beyond the second.
    while numel(sz) > 2 && sz(end) == 1
        sz(end) = [];
    end
end

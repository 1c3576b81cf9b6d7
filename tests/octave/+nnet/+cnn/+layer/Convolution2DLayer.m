classdef Convolution2DLayer < nnet.cnn.layer.Layer
    % Test double of convolution2dLayer(filterSize, numFilters, Name=Value)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.convolution2dlayer.html):
    % FilterSize [h w] (a scalar is repeated), NumFilters, Stride and DilationFactor [a b] (default [1 1]),
    % 'Padding' 'same', a scalar, [v h] or [t b l r] (stored as PaddingMode 'same'/'manual' and PaddingSize
    % [t b l r]), PaddingValue a number or 'symmetric-include-edge', 'symmetric-exclude-edge',
    % 'replicate'; NumChannels 'auto' until initialized; Weights FH x FW x NumChannels x NumFilters,
    % Bias 1 x 1 x NumFilters. Input and output 'SSCB'. Export only (no predict).
    properties
        FilterSize = []
        NumChannels = 'auto'
        NumFilters = []
        Stride = [1 1]
        DilationFactor = [1 1]
        PaddingMode = 'manual'
        PaddingSize = [0 0 0 0]
        PaddingValue = 0
        Weights = []
        Bias = []
        WeightsInitializer = 'glorot'
        BiasInitializer = 'zeros'
    end
    properties (Constant)
        DefaultName = 'conv'
    end
    methods

        function layer = set.FilterSize(layer, value)
            layer.FilterSize = hcTestCheck(value, 'posints', 'FilterSize', 2);
        end

        function layer = set.NumFilters(layer, value)
            layer.NumFilters = hcTestCheck(value, 'posint', 'NumFilters');
        end

        function layer = set.NumChannels(layer, value)
            layer.NumChannels = hcTestCheck(value, 'auto-or-posint', 'NumChannels');
        end

        function layer = set.Stride(layer, value)
            layer.Stride = hcTestCheck(value, 'posints', 'Stride', 2);
        end

        function layer = set.DilationFactor(layer, value)
            layer.DilationFactor = hcTestCheck(value, 'posints', 'DilationFactor', 2);
        end

        function layer = set.PaddingMode(layer, value)
            layer.PaddingMode = hcTestCheck(value, 'member', 'PaddingMode', {'manual', 'same'});
        end

        function layer = set.PaddingSize(layer, value)
            value = hcTestCheck(value, 'nonnegints', 'PaddingSize');
            if numel(value) ~= 4
                error('hessiancoreTest:invalidProperty', 'PaddingSize must be [t b l r]');
            end
            layer.PaddingSize = value;
        end

        function layer = set.PaddingValue(layer, value)
            if ischar(value) || isstring(value)
                value = hcTestCheck(value, 'member', 'PaddingValue', ...
                                    {'symmetric-include-edge', 'symmetric-exclude-edge', 'replicate'});
            else
                value = hcTestCheck(value, 'scalar', 'PaddingValue');
            end
            layer.PaddingValue = value;
        end

        function names = learnableNames(~)
            names = {'Weights', 'Bias'};
        end

        function shapes = parameterShapes(layer, inSizes, ~)
            shapes = {[layer.FilterSize, inSizes{1}(end), layer.NumFilters], [1, 1, layer.NumFilters]};
        end

        function value = initialValue(layer, name, shape, inSizes)
            if strcmp(name, 'Weights')
                fs = prod(layer.FilterSize);
                value = nnet.cnn.layer.Layer.glorot(shape, fs * inSizes{1}(end), fs * layer.NumFilters);
            else
                value = zeros(shape, 'single');
            end
        end

        function [sz, fmt] = outputSize(layer, inSizes, inFmts)
            if ~strcmp(inFmts{1}, 'SSCB')
                error('hessiancoreTest:format', 'convolution2dLayer takes ''SSCB'' input, got ''%s''', inFmts{1});
            end
            sz = hcTestWindowOutput(inSizes{1}, layer.FilterSize, layer.Stride, layer.DilationFactor, ...
                                    layer.PaddingMode, layer.PaddingSize);
            sz(3) = layer.NumFilters;
            fmt = 'SSCB';
        end

    end
end

classdef FullyConnectedLayer < nnet.cnn.layer.Layer
    % Test double of fullyConnectedLayer(outputSize, Name=Value)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.fullyconnectedlayer.html):
    % OutputSize a positive integer; InputSize 'auto' until the network is initialized, then the number of
    % input elements (S..., C flattened); Weights OutputSize x InputSize and Bias OutputSize x 1 (given
    % values must have those sizes); output 'CB' ('CBT' for sequences). Y = fullyconnect(X, Weights, Bias)
    % on 'CB' (Weights * X(:, b) + Bias for each observation b), computed on (traced) dlarray objects.
    properties
        InputSize = 'auto'
        OutputSize = []
        Weights = []
        Bias = []
        WeightsInitializer = 'glorot'
        BiasInitializer = 'zeros'
        WeightLearnRateFactor = 1
        BiasLearnRateFactor = 1
        WeightL2Factor = 1
        BiasL2Factor = 0
    end
    properties (Constant)
        DefaultName = 'fc'
    end
    methods

        function layer = set.OutputSize(layer, value)
            layer.OutputSize = hcTestCheck(value, 'posint', 'OutputSize');
        end

        function layer = set.InputSize(layer, value)
            layer.InputSize = hcTestCheck(value, 'auto-or-posint', 'InputSize');
        end

        function layer = set.Weights(layer, value)
            value = hcTestCheck(value, 'numeric', 'Weights');
            wrongRows = ~isempty(layer.OutputSize) && size(value, 1) ~= layer.OutputSize;
            if ~isempty(value) && (ndims(value) ~= 2 || wrongRows)
                error('hessiancoreTest:invalidProperty', 'Weights must be OutputSize-by-InputSize (%d rows)', ...
                      layer.OutputSize);
            end
            layer.Weights = value;
        end

        function layer = set.Bias(layer, value)
            value = hcTestCheck(value, 'numeric', 'Bias');
            if ~isempty(value) && ~isempty(layer.OutputSize) && ~isequal(size(value), [layer.OutputSize, 1])
                error('hessiancoreTest:invalidProperty', 'Bias must be %d-by-1', layer.OutputSize);
            end
            layer.Bias = value;
        end

        function names = learnableNames(~)
            names = {'Weights', 'Bias'};
        end

        function shapes = parameterShapes(layer, inSizes, ~)
            shapes = {[layer.OutputSize, prod(inSizes{1})], [layer.OutputSize, 1]};
        end

        function value = initialValue(layer, name, shape, inSizes)
            if strcmp(name, 'Weights')
                value = nnet.cnn.layer.Layer.glorot(shape, prod(inSizes{1}), layer.OutputSize);
            else
                value = zeros(shape, 'single');
            end
        end

        function [sz, fmt] = outputSize(layer, ~, inFmts)
            sz = layer.OutputSize;
            fmt = 'CB';
            if any(inFmts{1} == 'T')
                fmt = 'CBT';
            end
        end

        function Y = predictLayer(~, X, p)
            % fullyconnect (dlarray.fullyconnect page): 'CB' output, differentiable in X, Weights, Bias.
            Y = fullyconnect(X, p.Weights, p.Bias);
        end

    end
end

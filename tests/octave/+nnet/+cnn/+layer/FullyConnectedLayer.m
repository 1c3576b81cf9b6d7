classdef FullyConnectedLayer < nnet.cnn.layer.Layer
    % Test double of fullyConnectedLayer: Weights OutputSize x InputSize, Bias OutputSize x 1,
    % Y = fullyconnect(X, Weights, Bias): Weights * X(:, b) + Bias for each observation b.
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

        function [sz, fmt] = outputSize(layer, ~, ~)
            sz = layer.OutputSize;
            fmt = 'CB';
        end

        function [names, values, snames, svalues] = initLearnables(layer, inSize)
            in = prod(inSize);
            out = layer.OutputSize;
            W = layer.Weights;
            if isempty(W)
                % Glorot: uniform in +-sqrt(6 / (in + out)), single precision, as MATLAB initializes.
                W = single((2 * rand(out, in) - 1) * sqrt(6 / (in + out)));
            end
            b = layer.Bias;
            if isempty(b)
                b = zeros(out, 1, 'like', W);
            end
            if ~isequal(size(W), [out, in]) || ~isequal(size(b), [out, 1])
                error('hessiancoreTest:size', 'layer %s: Weights must be %dx%d and Bias %dx1', ...
                      layer.Name, out, in, out);
            end
            names = {'Weights', 'Bias'};
            values = {W, b};
            snames = {};
            svalues = {};
        end

        function Y = predictLayer(~, X, p)
            % fullyconnect (dlarray.fullyconnect page): 'CB' output, differentiable in X, Weights, Bias.
            Y = fullyconnect(X, p.Weights, p.Bias);
        end

    end
end

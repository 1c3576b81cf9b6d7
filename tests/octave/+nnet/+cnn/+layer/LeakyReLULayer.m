classdef LeakyReLULayer < nnet.cnn.layer.Layer
    % Test double of leakyReluLayer(scale): Y = X for X > 0, Scale * X otherwise.
    properties
        Scale = 0.01
    end
    properties (Constant)
        DefaultName = 'leakyrelu'
    end
    methods

        function Y = predictLayer(layer, X, ~)
            Y = leakyrelu(X, layer.Scale);
        end

    end
end

classdef LeakyReLULayer < nnet.cnn.layer.Layer
    % Test double of leakyReluLayer(scale)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.leakyrelulayer.html): Scale a finite
    % scalar (default 0.01); Y = X for X > 0, Scale * X otherwise.
    properties
        Scale = 0.01
    end
    properties (Constant)
        DefaultName = 'leakyrelu'
    end
    methods

        function layer = set.Scale(layer, value)
            layer.Scale = hcTestCheck(value, 'scalar', 'Scale');
        end

        function Y = predictLayer(layer, X, ~)
            Y = leakyrelu(X, layer.Scale);
        end

    end
end

classdef GELULayer < nnet.cnn.layer.Layer
    % Test double of geluLayer(Name=Value)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.gelulayer.html):
    % Approximation 'none' (default, the error function) or 'tanh'; elementwise. Export only.
    properties
        Approximation = 'none'
    end
    properties (Constant)
        DefaultName = 'gelu'
    end
    methods

        function layer = set.Approximation(layer, value)
            layer.Approximation = hcTestCheck(value, 'member', 'Approximation', {'none', 'tanh'});
        end

    end
end

classdef DropoutLayer < nnet.cnn.layer.Layer
    % Test double of dropoutLayer(probability)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.dropoutlayer.html): Probability a
    % number in [0, 1) (default 0.5); the identity at prediction. Export only.
    properties
        Probability = 0.5
    end
    properties (Constant)
        DefaultName = 'dropout'
    end
    methods

        function layer = set.Probability(layer, value)
            value = hcTestCheck(value, 'scalar', 'Probability');
            if value < 0 || value >= 1
                error('hessiancoreTest:invalidProperty', 'Probability must be in [0, 1)');
            end
            layer.Probability = value;
        end

    end
end

classdef BatchNormalizationLayer < nnet.cnn.layer.Layer
    % Test double of batchNormalizationLayer(Name=Value)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.batchnormalizationlayer.html):
    % Epsilon a number >= 1e-5 (default 1e-5); NumChannels 'auto' until initialized; learnables Offset
    % and Scale, state TrainedMean and TrainedVariance, each C-by-1 for 'CB' data and 1x1xC after an
    % image layer (zeros and ones at initialization). Export only (no predict).
    properties
        NumChannels = 'auto'
        Epsilon = 1e-5
        TrainedMean = []
        TrainedVariance = []
        Offset = []
        Scale = []
    end
    properties (Constant)
        DefaultName = 'batchnorm'
    end
    methods

        function layer = set.Epsilon(layer, value)
            value = hcTestCheck(value, 'scalar', 'Epsilon');
            if value < 1e-5
                error('hessiancoreTest:invalidProperty', 'Epsilon must be at least 1e-5');
            end
            layer.Epsilon = value;
        end

        function layer = set.NumChannels(layer, value)
            layer.NumChannels = hcTestCheck(value, 'auto-or-posint', 'NumChannels');
        end

        function names = learnableNames(~)
            names = {'Offset', 'Scale'};
        end

        function names = stateNames(~)
            names = {'TrainedMean', 'TrainedVariance'};
        end

        function shapes = parameterShapes(~, inSizes, inFmts)
            shapes = repmat({hcTestChannelShape(inSizes{1}, inFmts{1})}, 1, 4);
        end

    end
end

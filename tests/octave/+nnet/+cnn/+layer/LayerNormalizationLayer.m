classdef LayerNormalizationLayer < nnet.cnn.layer.Layer
    % Test double of layerNormalizationLayer(Name=Value)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.layernormalizationlayer.html):
    % Epsilon a number >= 1e-5 (default 1e-5); OperationDimension 'auto' (default), 'channel-only',
    % 'spatial-channel' or 'batch-excluded'; NumChannels 'auto' until initialized; learnables Offset and
    % Scale, one per channel (C-by-1 for 'CB'/'CBT' data, 1x1xC after an image layer). Export only.
    properties
        NumChannels = 'auto'
        Epsilon = 1e-5
        OperationDimension = 'auto'
        Offset = []
        Scale = []
    end
    properties (Constant)
        DefaultName = 'layernorm'
    end
    methods

        function layer = set.Epsilon(layer, value)
            value = hcTestCheck(value, 'scalar', 'Epsilon');
            if value < 1e-5
                error('hessiancoreTest:invalidProperty', 'Epsilon must be at least 1e-5');
            end
            layer.Epsilon = value;
        end

        function layer = set.OperationDimension(layer, value)
            layer.OperationDimension = hcTestCheck(value, 'member', 'OperationDimension', ...
                                                   {'auto', 'channel-only', 'spatial-channel', 'batch-excluded'});
        end

        function layer = set.NumChannels(layer, value)
            layer.NumChannels = hcTestCheck(value, 'auto-or-posint', 'NumChannels');
        end

        function names = learnableNames(~)
            names = {'Offset', 'Scale'};
        end

        function shapes = parameterShapes(~, inSizes, inFmts)
            shapes = repmat({hcTestChannelShape(inSizes{1}, inFmts{1})}, 1, 2);
        end

    end
end

classdef BatchNormalizationLayer < nnet.cnn.layer.Layer
    % Test double of batchNormalizationLayer (documented properties; export only): learnables Offset
    % and Scale, state TrainedMean and TrainedVariance, each 1 x 1 x C after an image layer.
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

        function [names, values, snames, svalues] = initLearnables(~, inSize)
            c = inSize(end);
            shape = [1, 1, c];
            if numel(inSize) == 1
                shape = [c, 1];
            end
            names = {'Offset', 'Scale'};
            values = {zeros(shape, 'single'), ones(shape, 'single')};
            snames = {'TrainedMean', 'TrainedVariance'};
            svalues = {zeros(shape, 'single'), ones(shape, 'single')};
        end

    end
end

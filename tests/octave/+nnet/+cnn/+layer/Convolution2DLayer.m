classdef Convolution2DLayer < nnet.cnn.layer.Layer
    % Test double of convolution2dLayer (documented properties; export only, no predict):
    % Weights FH x FW x NumChannels x NumFilters, Bias 1 x 1 x NumFilters, PaddingSize [t b l r].
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

        function [sz, fmt] = outputSize(layer, sz, ~)
            fs = layer.FilterSize;
            if numel(fs) == 1
                fs = [fs fs];
            end
            if strcmp(layer.PaddingMode, 'same')
                sz = [ceil(sz(1:2) ./ layer.Stride), layer.NumFilters];
            else
                p = layer.PaddingSize;
                span = layer.DilationFactor .* (fs - 1) + 1;
                sz = [floor((sz(1:2) + [p(1) + p(2), p(3) + p(4)] - span) ./ layer.Stride) + 1, layer.NumFilters];
            end
            fmt = 'SSCB';
        end

        function [names, values, snames, svalues] = initLearnables(layer, inSize)
            fs = layer.FilterSize;
            if numel(fs) == 1
                fs = [fs fs];
            end
            c = inSize(end);
            W = layer.Weights;
            if isempty(W)
                fan = prod(fs) * (c + layer.NumFilters);
                W = single((2 * rand([fs, c, layer.NumFilters]) - 1) * sqrt(6 / fan));
            end
            b = layer.Bias;
            if isempty(b)
                b = zeros(1, 1, layer.NumFilters, 'like', W);
            end
            names = {'Weights', 'Bias'};
            values = {W, b};
            snames = {};
            svalues = {};
        end

    end
end

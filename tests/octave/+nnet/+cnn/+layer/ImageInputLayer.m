classdef ImageInputLayer < nnet.cnn.layer.Layer
    % Test double of imageInputLayer (documented properties; export only, no predict).
    properties
        InputSize = []
        Normalization = 'zerocenter'
        NormalizationDimension = 'auto'
        Mean = []
        StandardDeviation = []
        Min = []
        Max = []
    end
    properties (Constant)
        DefaultName = 'imageinput'
    end
    methods

        function [sz, fmt] = outputSize(layer, ~, ~)
            sz = layer.InputSize;
            if numel(sz) == 2
                sz(3) = 1;
            end
            fmt = 'SSCB';
        end

    end
end

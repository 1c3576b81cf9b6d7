classdef FeatureInputLayer < nnet.cnn.layer.Layer
    % Test double of featureInputLayer (documented properties; Normalization 'none' and 'zscore' run).
    properties
        InputSize = []
        Normalization = 'none'
        NormalizationDimension = 'auto'
        Mean = []
        StandardDeviation = []
        Min = []
        Max = []
    end
    properties (Constant)
        DefaultName = 'input'
    end
    methods

        function [sz, fmt] = outputSize(layer, ~, ~)
            sz = layer.InputSize;
            fmt = 'CB';
        end

        function Y = predictLayer(layer, X, ~)
            switch layer.Normalization
                case 'none'
                    Y = X;
                case 'zscore'
                    Y = (X - layer.Mean(:)) ./ layer.StandardDeviation(:);
                otherwise
                    error('hessiancoreTest:notImplemented', 'Normalization ''%s'' is not in the double', ...
                          layer.Normalization);
            end
        end

    end
end

classdef FeatureInputLayer < nnet.cnn.layer.Layer
    % Test double of featureInputLayer(numFeatures, Name=Value)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.featureinputlayer.html):
    % InputSize (a positive integer), Normalization 'none' (default), 'zerocenter', 'zscore',
    % 'rescale-symmetric', 'rescale-zero-one' or a function handle; NormalizationDimension 'auto',
    % 'channel' or 'all'; Mean, StandardDeviation, Min, Max: [], a scalar or numFeatures-by-1. No inputs,
    % output 'CB'. Predicts with every Normalization.
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

        function layer = FeatureInputLayer()
            layer.NumInputs = 0;
            layer.InputNames = {};
        end

        function layer = set.InputSize(layer, value)
            layer.InputSize = hcTestCheck(value, 'posint', 'InputSize');
        end

        function layer = set.Normalization(layer, value)
            layer.Normalization = hcTestNormalization(value, 'mode');
        end

        function layer = set.NormalizationDimension(layer, value)
            layer.NormalizationDimension = hcTestCheck(value, 'member', 'NormalizationDimension', ...
                                                       {'auto', 'channel', 'all'});
        end

        function layer = set.Mean(layer, value)
            layer.Mean = hcTestNormalization(value, 'vector', layer.InputSize, 'Mean');
        end

        function layer = set.StandardDeviation(layer, value)
            layer.StandardDeviation = hcTestNormalization(value, 'vector', layer.InputSize, 'StandardDeviation');
        end

        function layer = set.Min(layer, value)
            layer.Min = hcTestNormalization(value, 'vector', layer.InputSize, 'Min');
        end

        function layer = set.Max(layer, value)
            layer.Max = hcTestNormalization(value, 'vector', layer.InputSize, 'Max');
        end

        function [sz, fmt] = outputSize(layer, ~, ~)
            sz = layer.InputSize;
            fmt = 'CB';
        end

        function Y = predictLayer(layer, X, ~)
            % The page's normalization formulas (see hcTestNormalization).
            Y = hcTestNormalization(layer, 'apply', X);
        end

    end
end

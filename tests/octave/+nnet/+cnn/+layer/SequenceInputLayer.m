classdef SequenceInputLayer < nnet.cnn.layer.Layer
    % Test double of sequenceInputLayer(inputSize, Name=Value)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.sequenceinputlayer.html), vector
    % sequences: InputSize a positive integer (image sequences, [h w c], are left out: the bridge does not
    % translate them); Normalization 'none' (default), 'zerocenter', 'zscore', 'rescale-symmetric',
    % 'rescale-zero-one' or a function handle; Mean, StandardDeviation, Min, Max: [], a scalar or
    % InputSize-by-1; MinLength a positive integer (default 1). No inputs, output 'CBT'; predicts
    % with every Normalization (the page's formulas, as featureInputLayer's).
    properties
        InputSize = []
        Normalization = 'none'
        NormalizationDimension = 'auto'
        Mean = []
        StandardDeviation = []
        Min = []
        Max = []
        MinLength = 1
    end
    properties (Constant)
        DefaultName = 'sequenceinput'
    end
    methods

        function layer = SequenceInputLayer()
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
                                                       {'auto', 'channel', 'element', 'all'});
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

        function layer = set.MinLength(layer, value)
            layer.MinLength = hcTestCheck(value, 'posint', 'MinLength');
        end

        function [sz, fmt] = outputSize(layer, ~, ~)
            sz = layer.InputSize;
            fmt = 'CBT';
        end

        function Y = predictLayer(layer, X, ~)
            % The page's normalization formulas (see hcTestNormalization).
            Y = hcTestNormalization(layer, 'apply', X);
        end

    end
end

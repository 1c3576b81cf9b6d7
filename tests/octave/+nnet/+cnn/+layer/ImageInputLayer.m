classdef ImageInputLayer < nnet.cnn.layer.Layer
    % Test double of imageInputLayer(inputSize, Name=Value)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.imageinputlayer.html): InputSize
    % [h w] or [h w c] positive integers (stored [h w c]); Normalization 'zerocenter' (default), 'zscore',
    % 'rescale-symmetric', 'rescale-zero-one', 'none' or a function handle; NormalizationDimension 'auto',
    % 'channel', 'element' or 'all'; Mean, StandardDeviation, Min, Max: [], a scalar, 1x1xc or h x w x c.
    % No inputs, output 'SSCB'. Export only (no predict).
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

        function layer = ImageInputLayer()
            layer.NumInputs = 0;
            layer.InputNames = {};
        end

        function layer = set.InputSize(layer, value)
            value = hcTestCheck(value, 'nonnegints', 'InputSize');
            if ~any(numel(value) == [2, 3]) || any(value < 1)
                error('hessiancoreTest:invalidProperty', 'InputSize must be [h w] or [h w c] positive integers');
            end
            value(end + 1:3) = 1;
            layer.InputSize = value;
        end

        function layer = set.Normalization(layer, value)
            layer.Normalization = hcTestNormalization(value, 'mode');
        end

        function layer = set.NormalizationDimension(layer, value)
            layer.NormalizationDimension = hcTestCheck(value, 'member', 'NormalizationDimension', ...
                                                       {'auto', 'channel', 'element', 'all'});
        end

        function layer = set.Mean(layer, value)
            layer.Mean = hcTestNormalization(value, 'image', layer.InputSize, 'Mean');
        end

        function layer = set.StandardDeviation(layer, value)
            layer.StandardDeviation = hcTestNormalization(value, 'image', layer.InputSize, 'StandardDeviation');
        end

        function layer = set.Min(layer, value)
            layer.Min = hcTestNormalization(value, 'image', layer.InputSize, 'Min');
        end

        function layer = set.Max(layer, value)
            layer.Max = hcTestNormalization(value, 'image', layer.InputSize, 'Max');
        end

        function [sz, fmt] = outputSize(layer, ~, ~)
            sz = layer.InputSize;
            fmt = 'SSCB';
        end

    end
end

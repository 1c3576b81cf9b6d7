classdef AveragePooling2DLayer < nnet.cnn.layer.Layer
    % Test double of averagePooling2dLayer(poolSize, Name=Value)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.averagepooling2dlayer.html):
    % PoolSize [h w] (a scalar is repeated), Stride [a b] (default [1 1]), 'Padding' 'same', a scalar,
    % [v h] or [t b l r] (stored as PaddingMode and PaddingSize [t b l r]), PaddingValue 0 (default:
    % padded zeros count in the mean) or 'mean' (they do not). Input and output 'SSCB'. Export only.
    properties
        PoolSize = []
        Stride = [1 1]
        PaddingMode = 'manual'
        PaddingSize = [0 0 0 0]
        PaddingValue = 0
    end
    properties (Constant)
        DefaultName = 'avgpool'
    end
    methods

        function layer = set.PoolSize(layer, value)
            layer.PoolSize = hcTestCheck(value, 'posints', 'PoolSize', 2);
        end

        function layer = set.Stride(layer, value)
            layer.Stride = hcTestCheck(value, 'posints', 'Stride', 2);
        end

        function layer = set.PaddingMode(layer, value)
            layer.PaddingMode = hcTestCheck(value, 'member', 'PaddingMode', {'manual', 'same'});
        end

        function layer = set.PaddingSize(layer, value)
            value = hcTestCheck(value, 'nonnegints', 'PaddingSize');
            if numel(value) ~= 4
                error('hessiancoreTest:invalidProperty', 'PaddingSize must be [t b l r]');
            end
            layer.PaddingSize = value;
        end

        function layer = set.PaddingValue(layer, value)
            if ischar(value) || isstring(value)
                value = hcTestCheck(value, 'member', 'PaddingValue', {'mean'});
            elseif ~(isnumeric(value) && isscalar(value) && value == 0)
                error('hessiancoreTest:invalidProperty', 'PaddingValue must be 0 or ''mean''');
            end
            layer.PaddingValue = value;
        end

        function [sz, fmt] = outputSize(layer, inSizes, inFmts)
            if ~strcmp(inFmts{1}, 'SSCB')
                error('hessiancoreTest:format', 'averagePooling2dLayer takes ''SSCB'' input, got ''%s''', inFmts{1});
            end
            sz = hcTestWindowOutput(inSizes{1}, layer.PoolSize, layer.Stride, [1 1], layer.PaddingMode, ...
                                    layer.PaddingSize);
            fmt = 'SSCB';
        end

    end
end

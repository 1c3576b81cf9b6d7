classdef MaxPooling2DLayer < nnet.cnn.layer.Layer
    % Test double of maxPooling2dLayer(poolSize, Name=Value)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.maxpooling2dlayer.html):
    % PoolSize [h w] (a scalar is repeated), Stride [a b] (default [1 1]), 'Padding' 'same', a scalar,
    % [v h] or [t b l r] (stored as PaddingMode and PaddingSize [t b l r]). Input and output 'SSCB'. Export only.
    properties
        PoolSize = []
        Stride = [1 1]
        PaddingMode = 'manual'
        PaddingSize = [0 0 0 0]

    end
    properties (Constant)
        DefaultName = 'maxpool'
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

        function [sz, fmt] = outputSize(layer, inSizes, inFmts)
            if ~strcmp(inFmts{1}, 'SSCB')
                error('hessiancoreTest:format', 'maxPooling2dLayer takes ''SSCB'' input, got ''%s''', inFmts{1});
            end
            sz = hcTestWindowOutput(inSizes{1}, layer.PoolSize, layer.Stride, [1 1], layer.PaddingMode, ...
                                    layer.PaddingSize);
            fmt = 'SSCB';
        end

    end
end

classdef ConcatenationLayer < nnet.cnn.layer.Layer
    % Test double of concatenationLayer(dim, numInputs)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.concatenationlayer.html):
    % concatenates NumInputs (>= 2) inputs along dimension Dim (a positive integer) of the formatted data
    % (S..., C, B, T order: Dim 1 is C for 'CB' data, 3 is C for 'SSCB'). Export only.
    properties
        Dim = []
    end
    properties (Constant)
        DefaultName = 'concat'
    end
    methods

        function layer = ConcatenationLayer(dim, numInputs)
            if nargin == 0
                [dim, numInputs] = deal(1, 2);
            end
            layer = hcTestMultiInput(layer, numInputs);
            layer.Dim = dim;
        end

        function layer = set.Dim(layer, value)
            layer.Dim = hcTestCheck(value, 'posint', 'Dim');
        end

        function [sz, fmt] = outputSize(layer, inSizes, inFmts)
            fmt = inFmts{1};
            d = layer.Dim;
            if d > numel(inSizes{1}) || ~all(strcmp(inFmts, fmt))
                error('hessiancoreTest:size', 'layer ''%s'': Dim %d is not a dimension of S..., C of ''%s'' data', ...
                      layer.Name, d, fmt);
            end
            sz = inSizes{1};
            sz(d) = sum(cellfun(@(s) s(d), inSizes));
        end

    end
end

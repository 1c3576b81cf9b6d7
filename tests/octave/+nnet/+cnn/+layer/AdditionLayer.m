classdef AdditionLayer < nnet.cnn.layer.Layer
    % Test double of additionLayer(numInputs)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.additionlayer.html): adds NumInputs
    % (an integer >= 2) inputs of the same size element-wise; InputNames 'in1', ..., 'inN'. Export only.
    properties (Constant)
        DefaultName = 'addition'
    end
    methods

        function layer = AdditionLayer(numInputs)
            if nargin == 0
                numInputs = 2;
            end
            layer = hcTestMultiInput(layer, numInputs);
        end

        function [sz, fmt] = outputSize(layer, inSizes, inFmts)
            if ~all(cellfun(@(s) isequal(s, inSizes{1}), inSizes)) || ~all(strcmp(inFmts, inFmts{1}))
                error('hessiancoreTest:size', 'layer ''%s'': the inputs of an addition differ in size or format', ...
                      layer.Name);
            end
            sz = inSizes{1};
            fmt = inFmts{1};
        end

    end
end

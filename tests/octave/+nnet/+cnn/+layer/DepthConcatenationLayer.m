classdef DepthConcatenationLayer < nnet.cnn.layer.Layer
    % Test double of depthConcatenationLayer(numInputs)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.depthconcatenationlayer.html):
    % concatenates NumInputs (>= 2) inputs along the channels; their spatial sizes must agree. Export only.
    properties (Constant)
        DefaultName = 'depthcat'
    end
    methods

        function layer = DepthConcatenationLayer(numInputs)
            if nargin == 0
                numInputs = 2;
            end
            layer = hcTestMultiInput(layer, numInputs);
        end

        function [sz, fmt] = outputSize(layer, inSizes, inFmts)
            spatial = cellfun(@(s) s(1:end - 1), inSizes, 'UniformOutput', false);
            if ~all(cellfun(@(s) isequal(s, spatial{1}), spatial)) || ~all(strcmp(inFmts, inFmts{1}))
                error('hessiancoreTest:size', 'layer ''%s'': depth concatenation needs equal spatial sizes', ...
                      layer.Name);
            end
            sz = [spatial{1}, sum(cellfun(@(s) s(end), inSizes))];
            fmt = inFmts{1};
        end

    end
end

classdef FlattenLayer < nnet.cnn.layer.Layer
    % Test double of flattenLayer
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.flattenlayer.html):
    % collapses the spatial and channel dimensions into C (column-major): 'SSCB' of [h w c] -> 'CB' of
    % [h*w*c]; predictLayer computes it on (traced) dlarray objects, so the AD doubles differentiate through it.
    properties (Constant)
        DefaultName = 'flatten'
    end
    methods

        function [sz, fmt] = outputSize(~, inSizes, inFmts)
            sz = prod(inSizes{1});
            fmt = strrep(inFmts{1}, 'S', '');
        end

        function Y = predictLayer(~, X, ~)
            % S..., C flattened column-major into C for each observation ('CB' output).
            b = finddim(X, 'B');
            n = 1;
            if ~isempty(b)
                n = size(X, b);
            end
            Y = dlarray(reshape(stripdims(X), [], n), 'CB');
        end

    end
end

classdef FlattenLayer < nnet.cnn.layer.Layer
    % Test double of flattenLayer
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.flattenlayer.html):
    % collapses the spatial and channel dimensions into C (column-major): 'SSCB' of [h w c] -> 'CB' of
    % [h*w*c]. Y = reshape(X, [], size(X, ndims(X))) for the double's 'CB' predict.
    properties (Constant)
        DefaultName = 'flatten'
    end
    methods

        function [sz, fmt] = outputSize(~, inSizes, inFmts)
            sz = prod(inSizes{1});
            fmt = strrep(inFmts{1}, 'S', '');
        end

        function Y = predictLayer(~, X, ~)
            Y = reshape(X, [], size(X, ndims(X)));
        end

    end
end

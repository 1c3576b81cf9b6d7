classdef FlattenLayer < nnet.cnn.layer.Layer
    % Test double of flattenLayer: Y = reshape(X, [], size(X, ndims(X))) (channels along dimension 1 for 'CB' data).
    properties (Constant)
        DefaultName = 'flatten'
    end
    methods

        function Y = predictLayer(~, X, ~)
            Y = reshape(X, [], size(X, ndims(X)));
        end

    end
end

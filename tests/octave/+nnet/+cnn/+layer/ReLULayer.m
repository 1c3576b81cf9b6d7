classdef ReLULayer < nnet.cnn.layer.Layer
    % Test double of reluLayer: Y = max(X, 0) (channels along dimension 1 for 'CB' data).
    properties (Constant)
        DefaultName = 'relu'
    end
    methods

        function Y = predictLayer(~, X, ~)
            Y = relu(X);
        end

    end
end

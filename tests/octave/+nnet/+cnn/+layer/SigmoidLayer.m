classdef SigmoidLayer < nnet.cnn.layer.Layer
    % Test double of sigmoidLayer: Y = 1 ./ (1 + exp(-X)) (channels along dimension 1 for 'CB' data).
    properties (Constant)
        DefaultName = 'sigmoid'
    end
    methods

        function Y = predictLayer(~, X, ~)
            Y = sigmoid(X);
        end

    end
end

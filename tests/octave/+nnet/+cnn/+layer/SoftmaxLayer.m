classdef SoftmaxLayer < nnet.cnn.layer.Layer
    % Test double of softmaxLayer: softmax over the channels (dimension 1 of 'CB' data),
    % Y = exp(X - max(X, [], 1)) ./ sum(exp(X - max(X, [], 1)), 1).
    properties (Constant)
        DefaultName = 'softmax'
    end
    methods

        function Y = predictLayer(~, X, ~)
            Y = softmax(X);
        end

    end
end

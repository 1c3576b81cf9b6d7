classdef TanhLayer < nnet.cnn.layer.Layer
    % Test double of tanhLayer: Y = tanh(X) (channels along dimension 1 for 'CB' data).
    properties (Constant)
        DefaultName = 'tanh'
    end
    methods

        function Y = predictLayer(~, X, ~)
            Y = tanh(X);
        end

    end
end

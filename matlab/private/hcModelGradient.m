function [loss, grad] = hcModelGradient(prob)
    % HCMODELGRADIENT  Loss and gradient over all minibatches (weighted as hcModelHvp), in MATLAB (internal).
    %   LOSS = HCMODELGRADIENT(PROB) is the loss only; [LOSS, GRAD] = ... also the P x 1 gradient.
    total = sum(prob.Weights);
    loss = 0;
    grad = zeros(prob.P, 1);
    for b = 1:numel(prob.X)
        w = 1;
        if prob.Mean
            w = prob.Weights(b) / total;
        end
        if nargout > 1
            [value, g] = hcModelEval(prob, 'gradient', b);
            grad = grad + w * g;
        else
            value = hcModelEval(prob, 'loss', b);
        end
        loss = loss + w * value;
    end
end

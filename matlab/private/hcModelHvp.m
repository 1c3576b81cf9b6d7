function HV = hcModelHvp(prob, V)
    % HCMODELHVP  H * V for the Hessian of the loss over all minibatches, in MATLAB (internal).
    %   HV = HCMODELHVP(PROB, V): V is P x K (columns in dlhessian's order), HV is P x K double. Over
    %   minibatches b with weights w_b: H = sum_b w_b H_b / sum_b w_b (PROB.Mean) or sum_b H_b, so that
    %   minibatches of 3 and 5 observations give the Hessian of the 8 together. Columns go through
    %   hcModelEval in blocks of up to 32: one forward and one traced backward pass per block and
    %   minibatch, then one more backward pass per column.
    if size(V, 1) ~= prob.P
        error('hessiancore:invalidInput', 'V has %d rows; the network has P = %d learnable values', size(V, 1), ...
              prob.P);
    end
    block = 32;
    K = size(V, 2);
    HV = zeros(prob.P, K);
    total = sum(prob.Weights);
    for first = 1:block:K
        cols = first:min(first + block - 1, K);
        for b = 1:numel(prob.X)
            part = hcModelEval(prob, 'hvp', b, V(:, cols));
            if prob.Mean
                part = part * (prob.Weights(b) / total);
            end
            HV(:, cols) = HV(:, cols) + part;
        end
    end
end

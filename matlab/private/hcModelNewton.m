function res = hcModelNewton(prob, damping, lr)
    % HCMODELNEWTON  One damped Newton step computed in MATLAB: pcg on H + damping I (internal).
    %   RES = HCMODELNEWTON(PROB, DAMPING, LR) returns RES.values (P x 1: theta - LR * (H + DAMPING I) \ g),
    %   RES.loss_before, RES.loss_after (the loss at the new values, in PROB's precision), RES.method
    %   ('pcg' or 'shifted'), RES.shift, RES.pcg_flag, RES.pcg_iterations, RES.pcg_relres.
    %   MATLAB's pcg solves (H + DAMPING I) d = -g with Hessian-vector products (pcg page: function handle
    %   afun), tolerance 1e-10, up to min(max(2P, 20), 1000) iterations. When H + DAMPING I is not
    %   positive definite (pcg multiplied a vector of non-positive curvature, or the result is not a
    %   descent direction) the step is solved with H + shift I instead, shift = max(DAMPING, 2|lambda_min|)
    %   + sqrt(eps) |lambda|_max from hcModelEigs, exactly the Python backend's rule (always a descent
    %   direction). A pcg that stops before the tolerance warns 'hessiancore:notConverged'.
    [lossBefore, g] = hcModelGradient(prob);
    P = prob.P;
    shift = damping;
    method = 'pcg';
    [d, flag, relres, iters, least] = solve(prob, g, shift, P);
    descent = g' * d < 0 || all(g == 0);
    if least <= 0 || ~descent
        ends = hcModelEigs(prob, min(2, P), 'BE');
        lambdaMin = min(ends.values);
        top = max(abs(ends.values));
        shift = max(damping, 2 * max(-lambdaMin, 0)) + sqrt(eps) * max(top, eps);
        method = 'shifted';
        [d, flag, relres, iters] = solve(prob, g, shift, P);
    end
    if flag ~= 0
        warning('hessiancore:notConverged', ['dlnewtonUpdate: pcg stopped with flag %d after %d iterations, ', ...
                                             'relative residual %.2g'], flag, iters, relres);
    end
    if ~all(isfinite(d))
        error('hessiancore:nonFinite', 'dlnewtonUpdate: the Newton step is not finite; use Damping > 0');
    end
    theta = prob.Theta + lr * d;
    values = cell(1, numel(prob.Counts));
    old = prob.Net.Learnables.Value;
    offset = 0;
    for i = 1:numel(prob.Counts)
        values{i} = hcLike(theta(offset + 1:offset + prob.Counts(i)), old{i});
        offset = offset + prob.Counts(i);
    end
    after = prob;
    after.Net = hcWithValues(prob.Net, values);
    res = struct('values', theta, 'loss_before', lossBefore, 'loss_after', hcModelGradient(after), ...
                 'method', method, 'shift', shift, 'pcg_flag', flag, 'pcg_iterations', iters, 'pcg_relres', relres);
end

function [d, flag, relres, iters, least] = solve(prob, g, shift, P)
    d = zeros(P, 1);
    flag = 0;
    relres = 0;
    iters = 0;
    least = Inf;
    if all(g == 0)
        return
    end
    hcShiftedProduct('reset');
    [d, flag, relres, iters] = pcg(@(v) hcShiftedProduct(prob, v, shift), -g, 1e-10, min(max(2 * P, 20), 1000));
    least = hcShiftedProduct('least');
end

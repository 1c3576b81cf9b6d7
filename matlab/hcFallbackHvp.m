function [hv, n] = hcFallbackHvp(net, X, T, loss, v)
    % HCFALLBACKHVP  Hessian-vector product by MATLAB's own automatic differentiation.
    %   [HV, N] = HCFALLBACKHVP(NET, X, T, LOSS, V) returns H*V (P x 1, order as dlhessian) for the loss
    %   of NET on one minibatch X, T (formatted dlarray objects), with H the Hessian of that minibatch's
    %   loss, and N the number of observations in the minibatch ('B' dimension). Computed by double
    %   backpropagation, dlgradient(..., 'EnableHigherDerivatives', true), so it works for any layer
    %   MATLAB can differentiate, including those the Python translator does not support.
    %   LOSS is 'mse', 'crossentropy', 'l2loss', 'l1loss', 'huber' (MATLAB's own functions) or a function
    %   handle LOSS(Y, T). NET is evaluated with predict (inference mode), like the Python side.
    %
    %   Python's algorithms drive it through the MATLAB Engine (bridge.transport.fallback: Lanczos
    %   eigenvalues, Hutch++ trace, conjugate gradients), weighting minibatches by N.
    %
    %   Example:
    %     net = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) tanhLayer fullyConnectedLayer(2)]);
    %     X = dlarray(randn(3, 16), 'CB');  T = dlarray(randn(2, 16), 'CB');
    %     [hv, n] = hcFallbackHvp(net, X, T, 'mse', ones(26, 1));
    %
    %   See also dlhvp.
    vt = hcToLearnables(net, hcFromLearnables(net, v, 'V'), false);
    hvt = dlfeval(@hvpTerms, net, X, T, hcLossHandle(loss), vt);
    hv = hcFromLearnables(net, hvt, 'H*V');
    n = size(X, finddim(X, 'B'));
end

function hvTbl = hvpTerms(net, X, T, lossFcn, vTbl)
    % d/dtheta (g(theta)' * v) = H * v, with g traced so that it can be differentiated again.
    Y = predict(net, X);
    loss = lossFcn(Y, T);
    g = dlgradient(loss, net.Learnables, 'EnableHigherDerivatives', true);
    gv = 0;
    for i = 1:numel(g.Value)
        gv = gv + sum(g.Value{i} .* vTbl.Value{i}, 'all');
    end
    hvTbl = dlgradient(gv, net.Learnables);
end

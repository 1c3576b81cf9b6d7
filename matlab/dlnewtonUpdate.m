function [net, info] = dlnewtonUpdate(net, X, T, varargin)
    % DLNEWTONUPDATE  One damped Newton step on a dlnetwork's learnables, with the exact Hessian.
    %   NET = DLNEWTONUPDATE(NET, X, T) updates the learnables theta of NET to
    %     theta - LearnRate * (H + Damping * I) \ g
    %   with H and g the Hessian and gradient of the loss on X, T. An indefinite H + Damping*I is
    %   shifted to give a descent direction. The new values keep the storage of the old ones (dlarray,
    %   single or double, GPU). Several minibatches: cell arrays, as in dlhessian.
    %   [NET, INFO] = ... INFO has LossBefore and LossAfter (the loss on X, T before and after the step).
    %
    %   Options (also those of dlhessian except 'Output'):
    %     'Damping'    Levenberg-Marquardt damping added to the Hessian (default 1e-3)
    %     'LearnRate'  step length (default 1)
    %   Dense: for small networks (P up to a few thousand). With 'ModelLoss', @modelLoss (see dlhessian)
    %   MATLAB's pcg solves with Hessian-vector products instead (matrix-free); when pcg meets negative
    %   curvature it solves with the same shifted Hessian as the Python side.
    %
    %   Example (Newton training of a small regression network):
    %     net = dlnetwork([featureInputLayer(1) fullyConnectedLayer(8) tanhLayer fullyConnectedLayer(1)]);
    %     x = linspace(-2, 2, 32);  X = dlarray(x, 'CB');  T = dlarray(sin(2 * x), 'CB');
    %     for it = 1:5
    %       [net, info] = dlnewtonUpdate(net, X, T, 'Damping', 1e-2);
    %       fprintf('%d  loss %.3g\n', it, info.LossAfter);
    %     end
    %
    %   See also dlhessian, updateLearnables.
    [opts, onMatlab] = hcBackendOptions('dlnewtonUpdate', varargin);
    kwargs = struct('damping', opts.Damping, 'lr', opts.LearnRate);
    if onMatlab
        res = hcMatlabBackend('newton_update', net, X, T, opts, {}, kwargs);
    else
        res = hcCallPython(hcRequest('newton_update', net, X, T, opts, {}, kwargs), opts);
    end
    net = updateLearnables(net, res.values);
    info = struct('LossBefore', res.loss_before, 'LossAfter', res.loss_after);
end

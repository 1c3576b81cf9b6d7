function [t, se, info] = dlhessianTrace(net, X, T, varargin)
    % DLHESSIANTRACE  Trace of the Hessian of a dlnetwork's loss, estimated from Hessian-vector products.
    %   T = DLHESSIANTRACE(NET, X, T) estimates the trace (sum of eigenvalues) with Hutch++ (randomized,
    %   unbiased) from 'NumMatvecs' Hessian-vector products.
    %   [T, SE] = ... also returns the standard error of the estimate (0 when exact).
    %   [T, SE, INFO] = ... INFO has Trace, StdErr, NumMatvecs.
    %
    %   Options (also those of dlhessian except 'Output'):
    %     'NumMatvecs'  products to spend (default 100)
    %     'Method'      'hutch++' (default), 'hutchinson' or 'xtrace'
    %     'Seed'        seed of the random probes (default: [] for a random one); fixes the estimate
    %   For the exact trace of a small network use sum(dlhessianDiag(NET, X, T)).
    %   With 'ModelLoss', @modelLoss (see dlhessian) the products come from MATLAB itself; 'hutch++' and
    %   'hutchinson' (Rademacher probes from MATLAB's generator, seeded by 'Seed' and restored after).
    %
    %   Example:
    %     net = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) tanhLayer fullyConnectedLayer(2)]);
    %     X = dlarray(randn(3, 16), 'CB');  T = dlarray(randn(2, 16), 'CB');
    %     [t, se] = dlhessianTrace(net, X, T, 'NumMatvecs', 60, 'Seed', 1);
    %     exact = sum(dlhessianDiag(net, X, T));   % P = 26 here: the exact trace is cheap too
    %
    %   See also dlhessianDiag, dlhessianEigs.
    [opts, onMatlab] = hcBackendOptions('dlhessianTrace', varargin);
    kwargs = struct('num_matvecs', opts.NumMatvecs, 'method', opts.Method, 'seed', opts.Seed);
    if onMatlab
        res = hcMatlabBackend('trace', net, X, T, opts, {}, kwargs);
    else
        res = hcCallPython(hcRequest('trace', net, X, T, opts, {}, kwargs), opts);
    end
    t = res.trace;
    se = res.stderr;
    info = struct('Trace', res.trace, 'StdErr', res.stderr, 'NumMatvecs', res.num_matvecs);
end

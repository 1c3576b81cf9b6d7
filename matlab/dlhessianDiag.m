function d = dlhessianDiag(net, X, T, varargin)
    % DLHESSIANDIAG  Exact diagonal of the Hessian of a dlnetwork's loss (not an estimate).
    %   D = DLHESSIANDIAG(NET, X, T) returns the P x 1 diagonal of the Hessian (see dlhessian for the
    %   order), computed exactly without forming the P x P matrix.
    %   D = DLHESSIANDIAG(..., 'Output', 'table') returns it shaped like NET.Learnables.
    %   Several minibatches and the options: as dlhessian ('ModelLoss', @modelLoss: your own loss, computed
    %   in MATLAB, P Hessian-vector products).
    %
    %   Example:
    %     net = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) tanhLayer fullyConnectedLayer(2)]);
    %     X = dlarray(randn(3, 16), 'CB');  T = dlarray(randn(2, 16), 'CB');
    %     d = dlhessianDiag(net, X, T, 'Output', 'table');
    %     d.Value{1}            % curvature of each weight of the first layer (4 x 3)
    %
    %   See also dlhessian, dlhessianTrace.
    [opts, onMatlab] = hcBackendOptions('dlhessianDiag', varargin);
    if onMatlab
        d = hcMatlabBackend('diagonal', net, X, T, opts);
    else
        d = hcCallPython(hcRequest('diagonal', net, X, T, opts), opts);
    end
    if strcmp(opts.Output, 'table')
        d = hcToLearnables(net, d, false);
    end
end

function info = dlhessianPlan(net, X, T, varargin)
    % DLHESSIANPLAN  How the Hessian of a dlnetwork's loss is computed: which path, and why.
    %   INFO = DLHESSIANPLAN(NET, X, T) returns a struct of text fields, computing nothing large:
    %     dense           how dlhessian forms the P x P matrix: 'structured: ...' (the fast exact paths that
    %                     fully connected and convolutional networks take) or generic products, with the reason
    %     diagonal        how dlhessianDiag computes the exact diagonal
    %     products        how one Hessian-vector product (dlhvp) is computed
    %     block_products  how several products at once are computed (dlhessianEigs, dlhessianTrace)
    %     budget          the memory budget used and where it came from
    %     parameters      P, the number of learnable values
    %   The options are those of dlhessian (without 'Output'). With 'ModelLoss' or 'Backend', 'matlab' every
    %   path is MATLAB's automatic differentiation, and the fields say so.
    %
    %   Example:
    %     net = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) tanhLayer fullyConnectedLayer(2)]);
    %     X = dlarray(randn(3, 16), 'CB');  T = dlarray(randn(2, 16), 'CB');
    %     info = dlhessianPlan(net, X, T);
    %     disp(info.dense)      % 'structured: ...' for this fully connected network
    %
    %   See also dlhessian, dlhessianDiag, dlhvp.
    [opts, onMatlab] = hcBackendOptions('dlhessianPlan', varargin);
    if onMatlab
        info = hcMatlabBackend('plan', net, X, T, opts);
    else
        info = hcCallPython(hcRequest('plan', net, X, T, opts), opts);
    end
end

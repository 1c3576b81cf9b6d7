function H = dlhessian(net, X, T, varargin)
    % DLHESSIAN  Exact Hessian of a dlnetwork's loss with respect to its learnable parameters.
    %   H = DLHESSIAN(NET, X, T) returns the P x P Hessian of the loss of NET on the minibatch X with
    %   targets T, with respect to all learnables. X and T are formatted dlarray objects (or numeric
    %   arrays with 'DataFormat'/'TargetFormat'). Rows and columns follow NET.Learnables row order,
    %   each Value(:) column-major: H(i, j) = d2 loss / d theta_i d theta_j with
    %   theta = [Value{1}(:); Value{2}(:); ...]. P must be small enough for a dense P x P matrix.
    %
    %   H = DLHESSIAN(NET, {X1, X2, ...}, {T1, T2, ...}) is the sub-sampled Hessian over several
    %   minibatches: the Hessian of the loss over all their observations together (each minibatch
    %   weighted by its number of observations), not the mean of per-minibatch Hessians.
    %
    %   H = DLHESSIAN(..., Name, Value) options (also Name=Value):
    %     'Loss'          'mse' (default; half mean squared error as MATLAB's mse), 'crossentropy'
    %                     (on probabilities, after softmax), 'binary-crossentropy', 'l2loss', 'l1loss', 'huber'
    %     'LossOptions'   struct of the loss's own options, e.g. struct('NormalizationFactor', 'all-elements')
    %     'Output'        'matrix' (default) or 'table': a table shaped like NET.Learnables whose row i
    %                     Value is H(rows of learnable i, :) as a dlarray of size [size(learnable i), P]
    %     'DataFormat', 'TargetFormat', 'DataType', 'MemoryBudget', 'Transport', 'Python',
    %     'PythonOptions': see hcParseOptions.
    %
    %   Example:
    %     net = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) reluLayer fullyConnectedLayer(2)]);
    %     X = dlarray(randn(3, 16), 'CB');  T = dlarray(randn(2, 16), 'CB');
    %     H = dlhessian(net, X, T);              % 26 x 26
    %     H = dlhessian(net, X, T, 'Loss', 'mse', 'Output', 'table');
    %
    %   See also dlhvp, dlhessianDiag, dlhessianEigs, dlhessianTrace, dlnewtonUpdate, dlnetworkToSpec.
    [opts, onMatlab] = hcBackendOptions('dlhessian', varargin);
    if onMatlab
        H = hcMatlabBackend('hessian', net, X, T, opts);
    else
        H = hcCallPython(hcRequest('hessian', net, X, T, opts), opts);
    end
    if strcmp(opts.Output, 'table')
        H = hcToLearnables(net, H, true);
    end
end

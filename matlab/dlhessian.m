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
    %     'ModelLoss'     your own loss function, LOSS = F(NET, X, T): e.g. the modelLoss of a custom
    %                     training loop (extra outputs are ignored). Computed in MATLAB, without Python:
    %                     Hessian-vector products by double backpropagation inside dlfeval
    %                     (dlgradient(loss, NET.Learnables, 'EnableHigherDerivatives', true), then the
    %                     gradient of g' * v), the dense Hessian from products in blocks of columns.
    %                     Give 'ModelLoss' or 'Loss', not both.
    %     'Backend'       'auto' (default: 'matlab' with 'ModelLoss', else 'python'), 'python', or
    %                     'matlab': the loss named by 'Loss' computed by MATLAB's own loss function on
    %                     predict(NET, X), in MATLAB (to compare the two backends on one problem)
    %
    %   Your loss function ('ModelLoss'):
    %     - It runs as it is: forward(NET, X) uses training behaviour (dropout, batch statistics), so
    %       for a deterministic Hessian use predict or a network without such layers.
    %     - It must return the loss as a dlarray scalar (do not extractdata it). If it also computes
    %       gradients, do so only when they are asked for (if nargout > 1, gradients = dlgradient(...);
    %       end): dlgradient discards the derivative trace the Hessian needs ('RetainData').
    %     - Several minibatches: each minibatch's loss is weighted by its number of observations (size
    %       of X along 'B') and the sum divided by all observations. This is the loss of all the data
    %       together when your loss is a MEAN over the observations of its minibatch (as crossentropy,
    %       mse, l2loss and l1loss by default); a term that does not depend on the data, such as an L2
    %       penalty on the weights added to each minibatch's loss, then enters once. A loss that SUMS
    %       over observations: declare 'LossOptions', struct('NormalizationFactor', 'none') (the
    %       minibatch losses are added); one averaged over all elements of T: 'all-elements'.
    %     - The learnables are differentiated in double precision ('DataType'): a copy of NET is cast,
    %       together with X and T; NET itself is never changed.
    %     - A layer or function MATLAB cannot differentiate twice raises 'hessiancore:higherDerivatives'
    %       naming it; an error in your function 'hessiancore:modelLoss'.
    %
    %   Example:
    %     net = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) reluLayer fullyConnectedLayer(2)]);
    %     X = dlarray(randn(3, 16), 'CB');  T = dlarray(randn(2, 16), 'CB');
    %     H = dlhessian(net, X, T);              % 26 x 26
    %     H = dlhessian(net, X, T, 'Loss', 'mse', 'Output', 'table');
    %     H = dlhessian(net, X, T, 'ModelLoss', @modelLoss);     % your own loss, all in MATLAB
    %   with
    %     function loss = modelLoss(net, X, T)
    %         loss = mse(forward(net, X), T) + 1e-4 * sum(net.Learnables.Value{1}.^2, 'all');
    %     end
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

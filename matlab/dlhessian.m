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
    %   H = DLHESSIAN(..., Name, Value) options (also Name=Value; text as char or string):
    %     'Loss'          MATLAB's definitions: 'mse' (half mean squared error, as mse), 'l2loss', 'l1loss',
    %                     'huber', 'crossentropy' (takes probabilities: after a softmaxLayer),
    %                     'binary-crossentropy' (after a sigmoidLayer), 'index-crossentropy' (targets are
    %                     class indices). Default: 'crossentropy' when the network ends in a softmaxLayer,
    %                     else 'mse'.
    %     'LossOptions'   struct of the loss's own options: NormalizationFactor ('batch-size', 'all-elements'
    %                     for l2loss/l1loss/huber, 'none'), TransitionPoint (huber), ClassificationMode
    %                     (crossentropy), e.g. struct('NormalizationFactor', 'all-elements') with 'l2loss'
    %     'Output'        'matrix' (default) or 'table': a table shaped like NET.Learnables whose row i
    %                     Value is H(rows of learnable i, :) as a dlarray of size [size(learnable i), P]
    %     'DataFormat'    format of X when it is numeric or an unformatted dlarray, e.g. 'CB', 'SSCB'
    %     'TargetFormat'  format of T in that case (default: the format of the network output)
    %     'DataType'      'double' (default) or 'single': the precision of the computation
    %     'MemoryBudget'  bytes (or text such as '2GB') Python may use; default half the free memory
    %     'Transport'     'auto' (default: hessiancoreSetup's choice, else 'server'), 'server' (a Python
    %                     worker started on the first call and reused), 'subprocess', 'py'
    %     'Python'        Python executable (default: hessiancoreSetup's choice)
    %     'PythonOptions' struct of further keyword arguments for the Python function
    %     'ModelLoss'     your own loss function, LOSS = F(NET, X, T): e.g. the modelLoss of a custom
    %                     training loop (extra outputs are ignored). Computed in MATLAB, without Python:
    %                     Hessian-vector products by double backpropagation inside dlfeval
    %                     (dlgradient(loss, NET.Learnables, 'EnableHigherDerivatives', true), then the
    %                     gradient of g' * v), the dense Hessian from products in blocks of columns.
    %                     Give 'ModelLoss' or 'Loss', not both.
    %     'Backend'       'auto' (default: 'matlab' with 'ModelLoss', else 'python'), 'python', or
    %                     'matlab': the loss named by 'Loss' computed by MATLAB's own loss function on
    %                     predict(NET, X), in MATLAB (to compare the two backends on one problem)
    %   Input normalization given as a function handle in the input layer is applied to X in MATLAB.
    %   Errors have identifiers 'hessiancore:invalidInput', 'hessiancore:invalidOption',
    %   'hessiancore:nonFinite', 'hessiancore:memoryBudget', 'hessiancore:transport', ...
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
    %     H = dlhessian(net, X, T);              % 26 x 26, half mean squared error
    %     H = dlhessian(net, X, T, 'Loss', 'l2loss', 'LossOptions', struct('NormalizationFactor', 'all-elements'));
    %     Htbl = dlhessian(net, X, T, 'Output', 'table');
    %     size(Htbl.Value{1})                    % [4 3 26]: the rows of the first weights
    %     H = dlhessian(net, X, T, 'ModelLoss', @(net, X, T) mse(forward(net, X), T) + ...
    %         1e-4 * sum(net.Learnables.Value{1} .^ 2, 'all'));   % your own loss: all in MATLAB
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

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
    %   Input normalization given as a function handle in the input layer is applied to X in MATLAB.
    %   Errors have identifiers 'hessiancore:invalidInput', 'hessiancore:invalidOption',
    %   'hessiancore:nonFinite', 'hessiancore:memoryBudget', 'hessiancore:transport', ...
    %
    %   Example:
    %     net = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) reluLayer fullyConnectedLayer(2)]);
    %     X = dlarray(randn(3, 16), 'CB');  T = dlarray(randn(2, 16), 'CB');
    %     H = dlhessian(net, X, T);              % 26 x 26, half mean squared error
    %     H = dlhessian(net, X, T, 'Loss', 'l2loss', 'LossOptions', struct('NormalizationFactor', 'all-elements'));
    %     Htbl = dlhessian(net, X, T, 'Output', 'table');
    %     size(Htbl.Value{1})                    % [4 3 26]: the rows of the first weights
    %
    %   See also dlhvp, dlhessianDiag, dlhessianEigs, dlhessianTrace, dlnewtonUpdate, dlnetworkToSpec.
    opts = hcParseOptions('dlhessian', varargin);
    H = hcCallPython(hcRequest('hessian', net, X, T, opts), opts);
    if strcmp(opts.Output, 'table')
        H = hcToLearnables(net, H, true);
    end
end

function [V, D, info] = dlhessianEigs(net, X, T, k, varargin)
    % DLHESSIANEIGS  Extreme eigenvalues and eigenvectors of the Hessian of a dlnetwork's loss.
    %   D = DLHESSIANEIGS(NET, X, T, K) returns the K largest eigenvalues (K x 1, largest first).
    %   [V, D] = DLHESSIANEIGS(NET, X, T, K) also returns the P x K eigenvectors (unit norm, order as in
    %   dlhessian) and D as a K x K diagonal matrix, like eigs. K defaults to 6.
    %   [V, D, INFO] = ... INFO has Values (K x 1) and Residuals (K x 1, ||H v - lambda v|| per pair),
    %   which certify each pair.
    %
    %   Matrix-free (thick-restart Lanczos on Hessian-vector products): P may be large. With
    %   'ModelLoss', @modelLoss (see dlhessian) MATLAB's eigs runs on a function handle of products by
    %   double backpropagation (a small Hessian, P <= max(20, 2K + 2), is formed and eig'ed); the
    %   residuals are recomputed in the same way.
    %   Options (also those of dlhessian: 'Loss', 'LossOptions', 'DataFormat', 'MemoryBudget', ...):
    %     'Which'    'largest' (default), 'smallest', 'largestabs' or 'bothends' (K/2 at each end);
    %                also the short names 'LA', 'SA', 'LM', 'BE'
    %   Order, as eigs: the outermost first. 'largest' and 'bothends' descending, 'smallest' ascending,
    %   'largestabs' by descending magnitude.
    %     'Output'   'table': V as a table shaped like NET.Learnables, row values [size(learnable), K]
    %
    %   Example:
    %     net = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) tanhLayer fullyConnectedLayer(2)]);
    %     X = dlarray(randn(3, 16), 'CB');  T = dlarray(randn(2, 16), 'CB');
    %     [V, D, info] = dlhessianEigs(net, X, T, 5, 'Which', 'largest');
    %     lambda = diag(D);     % sharpness: lambda(1)
    %     max(info.Residuals)   % ||H v - lambda v||, certifies each pair
    %
    %   See also dlhessian, dlhessianTrace.
    if nargin < 4 || isempty(k)
        k = 6;
    end
    if ~(isnumeric(k) && isscalar(k) && k >= 1 && k == round(k))
        error('hessiancore:invalidInput', 'dlhessianEigs: K must be a positive integer');
    end
    names = {'largest', 'LA'; 'smallest', 'SA'; 'largestabs', 'LM'; 'bothends', 'BE'};
    [opts, onMatlab] = hcBackendOptions('dlhessianEigs', varargin);
    [row, ~] = find(strcmpi(names, opts.Which), 1);
    kwargs = struct('k', k, 'which', names{row, 2});
    if onMatlab
        res = hcMatlabBackend('eigs', net, X, T, opts, {}, kwargs);
    else
        res = hcCallPython(hcRequest('eigs', net, X, T, opts, {}, kwargs), opts);
    end
    values = res.values(:);
    switch names{row, 2}
        case 'SA'
            [~, order] = sort(values, 'ascend');
        case 'LM'
            [~, order] = sort(abs(values), 'descend');
        otherwise
            [~, order] = sort(values, 'descend');
    end
    values = values(order);
    residuals = res.residuals(:);
    info = struct('Values', values, 'Residuals', residuals(order));
    if nargout <= 1
        V = values;
        return
    end
    V = reshape(res.vectors, [], numel(values));
    V = V(:, order);
    D = diag(values);
    if strcmp(opts.Output, 'table')
        V = hcToLearnables(net, V, true);
    end
end

function hv = dlhvp(net, X, T, v, varargin)
    % DLHVP  Hessian-vector product of a dlnetwork's loss, without forming the Hessian.
    %   HV = DLHVP(NET, X, T, V) returns H*V where H is the Hessian of the loss of NET on X, T with
    %   respect to its learnables (see dlhessian for the order). V is a vector with P elements (in
    %   NET.Learnables order, each Value(:) column-major) or a table shaped like NET.Learnables (e.g. the
    %   output of dlgradient). HV has the form of V: a P x 1 vector, or a table when V is a table (or with
    %   'Output', 'table').
    %
    %   HV = DLHVP(NET, {X1, ...}, {T1, ...}, V) uses several minibatches (see dlhessian).
    %   Options: as dlhessian ('Loss', 'LossOptions', 'Output', 'DataFormat', 'MemoryBudget', ...;
    %   'ModelLoss', @modelLoss: your own loss, differentiated twice by MATLAB itself).
    %
    %   Example:
    %     net = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) tanhLayer fullyConnectedLayer(2)]);
    %     X = dlarray(randn(3, 16), 'CB');  T = dlarray(randn(2, 16), 'CB');
    %     hv = dlhvp(net, X, T, ones(26, 1));          % P-vector in, P-vector out
    %     v = net.Learnables;                           % or a Learnables-shaped table, e.g. dlgradient's
    %     v.Value = cellfun(@(w) dlarray(ones(size(w))), v.Value, 'UniformOutput', false);
    %     Hv = dlhvp(net, X, T, v);                     % a table with the same shapes
    %
    %   See also dlhessian, dlhessianEigs.
    [opts, onMatlab] = hcBackendOptions('dlhvp', varargin);
    if isa(v, 'table')
        opts.Output = 'table';
    end
    vec = hcFromLearnables(net, v, 'V');
    if size(vec, 2) ~= 1
        error('hessiancore:invalidInput', 'dlhvp: V must be one vector; got %d columns', size(vec, 2));
    end
    if onMatlab
        hv = hcMatlabBackend('hvp', net, X, T, opts, {vec});
    else
        hv = hcCallPython(hcRequest('hvp', net, X, T, opts, {vec}), opts);
    end
    if strcmp(opts.Output, 'table')
        hv = hcToLearnables(net, hv, false);
    end
end

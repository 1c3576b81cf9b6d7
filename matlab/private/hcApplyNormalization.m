function [spec, xd] = hcApplyNormalization(net, spec, xd)
    % HCAPPLYNORMALIZATION  Apply an input layer's Normalization function handle to the data (internal).
    %   [SPEC, XD] = HCAPPLYNORMALIZATION(NET, SPEC, XD): featureInputLayer, imageInputLayer and
    %   sequenceInputLayer accept a function handle as Normalization (MathWorks documents the handle as
    %   Y = f(X) without saying in which layout X arrives). Python cannot evaluate it, and it does not depend
    %   on the learnables, so it is applied here, once, to every minibatch of XD (hcData): to the numeric
    %   array in the order S..., C, B, T that extractdata of a formatted dlarray gives (the data are
    %   permuted to that order first). The input layer's Normalization in SPEC becomes 'none'. A handle
    %   that changes the size of the data or gives NaN or Inf raises 'hessiancore:invalidInput'.
    k = find(cellfun(@(s) isfield(s, 'Normalization') && ischar(s.Normalization) && ...
                     strncmp(s.Normalization, 'function_handle:', 16), spec.Layers));
    if isempty(k)
        return
    end
    if numel(k) > 1
        return  % several input layers: Python refuses the network by name
    end
    layer = net.Layers(k);
    fcn = layer.Normalization;
    [fmt, order] = canonicalOrder(xd.Format);
    for i = 1:numel(xd.Data)
        x = permute(xd.Data{i}, [order, numel(order) + 1:max(2, ndims(xd.Data{i}))]);
        sz = xd.Sizes{i}(order);
        try
            y = hcToDouble(fcn(x));
        catch err
            error('hessiancore:invalidInput', 'the Normalization function of input layer ''%s'' (%s) failed: %s', ...
                  spec.Layers{k}.Name, func2str(fcn), err.message);
        end
        ysz = size(y);
        ysz(end + 1:numel(sz)) = 1;
        if ~isequal(ysz(1:numel(sz)), sz) || numel(ysz) > numel(sz) && any(ysz(numel(sz) + 1:end) ~= 1)
            error('hessiancore:invalidInput', ['the Normalization function of input layer ''%s'' (%s) ', ...
                                               'returned size [%s] for data of size [%s] (%s)'], ...
                  spec.Layers{k}.Name, func2str(fcn), num2str(size(y)), num2str(sz), fmt);
        end
        if any(~isfinite(y(:)))
            error('hessiancore:invalidInput', ['the Normalization function of input layer ''%s'' (%s) ', ...
                                               'returned NaN or Inf'], spec.Layers{k}.Name, func2str(fcn));
        end
        xd.Data{i} = y;
        xd.Sizes{i} = sz;
    end
    xd.Format = fmt;
    spec.Layers{k}.Normalization = 'none';
end

function [fmt, order] = canonicalOrder(fmt)
    % The order of a formatted dlarray's stored data: S..., C, B, T, U (stable among equal labels).
    [~, order] = sort(arrayfun(@(c) find('SCBTU' == c), fmt));
    order = reshape(order, 1, []);
    fmt = fmt(order);
end
